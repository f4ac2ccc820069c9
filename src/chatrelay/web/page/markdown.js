// Basic Markdown for model output, built only from elements and text nodes.
//
// Nothing here parses HTML: every piece of model text goes in through `textContent` or a
// Text node, so `<script>`, `<img onerror>` or a `javascript:` link is shown as the
// characters it is. Links are deliberately not rendered as links at all.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const NUMBERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const BLANK = /^\s*$/;
// `code`, **strong**, *em* / _em_, in one left-to-right scan.
const INLINE =
  /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|(?<![\w*])\*(?=\S)([^*]*?\S)\*(?![\w*])|(?<![\w_])_(?=\S)([^_]*?\S)_(?![\w_])/g;

function element(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

/** Append `text` to `parent` with inline code, strong and emphasis; the rest as text. */
export function appendInline(parent, text) {
  let last = 0;
  for (const match of text.matchAll(INLINE)) {
    if (match.index > last) parent.append(text.slice(last, match.index));
    let node;
    if (match[1] !== undefined) {
      node = element("code");
      node.textContent = match[2];
    } else if (match[3] !== undefined) {
      node = element("strong");
      node.textContent = match[3];
    } else {
      node = element("em");
      node.textContent = match[4] ?? match[5];
    }
    parent.append(node);
    last = match.index + match[0].length;
  }
  if (last < text.length) parent.append(text.slice(last));
}

function appendLines(parent, lines) {
  lines.forEach((line, index) => {
    if (index > 0) parent.append(element("br"));
    appendInline(parent, line);
  });
}

function startsBlock(line) {
  return FENCE.test(line) || BULLET.test(line) || NUMBERED.test(line) || HEADING.test(line);
}

/** The blocks of `text` as a DocumentFragment (an unclosed fence runs to the end). */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      i += 1;
      while (i < lines.length && !lines[i].trimStart().startsWith(fence[1])) body.push(lines[i++]);
      i += 1;
      const pre = element("pre");
      const code = element("code");
      if (fence[2]) code.dataset.language = fence[2];
      code.textContent = body.join("\n");
      pre.append(code);
      fragment.append(pre);
      continue;
    }
    if (BLANK.test(line)) {
      i += 1;
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const node = element("p", `md-heading md-h${heading[1].length}`);
      appendInline(node, heading[2]);
      fragment.append(node);
      i += 1;
      continue;
    }
    if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = NUMBERED.test(line);
      const pattern = ordered ? NUMBERED : BULLET;
      const list = element(ordered ? "ol" : "ul");
      if (ordered) {
        const first = Number(NUMBERED.exec(line)[1]);
        if (first !== 1) list.start = first;
      }
      let item = null;
      let itemLines = [];
      const flush = () => {
        if (item) appendLines(item, itemLines);
      };
      while (i < lines.length && !BLANK.test(lines[i])) {
        const match = pattern.exec(lines[i]);
        if (match) {
          flush();
          item = element("li");
          list.append(item);
          itemLines = [ordered ? match[2] : match[1]];
        } else if (/^\s+\S/.test(lines[i]) && !FENCE.test(lines[i])) {
          itemLines.push(lines[i].trim());
        } else {
          break;
        }
        i += 1;
      }
      flush();
      fragment.append(list);
      continue;
    }
    if (QUOTE.test(line)) {
      const quote = element("blockquote");
      const quoted = [];
      while (i < lines.length && QUOTE.test(lines[i])) quoted.push(QUOTE.exec(lines[i++])[1]);
      quote.append(renderMarkdown(quoted.join("\n")));
      fragment.append(quote);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !BLANK.test(lines[i]) && !(paragraph.length && startsBlock(lines[i]))) {
      paragraph.push(lines[i++]);
    }
    const node = element("p");
    appendLines(node, paragraph);
    fragment.append(node);
  }
  return fragment;
}
