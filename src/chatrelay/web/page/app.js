// The chat page: conversations, messages, and the one stream this tab follows.
//
// All state comes from the API; reopening the page (the conversation id is in the URL's
// hash) rebuilds it, and a message still streaming is followed again from its `start`.

import { ApiError, api, clientKey, setClientKey } from "./api.js";
import { follow, followedId, resume, stopFollowing } from "./follow.js";
import { renderMarkdown } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conversations: $("conversation-list"),
  newConversation: $("new-conversation"),
  title: $("conversation-title"),
  messages: $("messages"),
  composer: $("composer"),
  input: $("composer-input"),
  send: $("send"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  keyButton: $("key-button"),
  notice: $("notice"),
  connection: $("connection"),
  connectionText: $("connection-text"),
  reconnect: $("reconnect"),
};

const STATUS_TEXT = {
  streaming: "streaming…",
  completed: "completed",
  cancelled: "cancelled",
  failed: "failed",
  interrupted: "interrupted",
};

let conversationId = null;
let messages = []; // the visible (not superseded) messages, in order
const views = new Map(); // message id -> its elements

// --- small helpers -----------------------------------------------------------------------

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, onClick, className = "") {
  const node = element("button", className, label);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

function showNotice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

function reportError(error) {
  if (error instanceof ApiError && error.status === 401) {
    askForKey(
      clientKey()
        ? `The client key was refused: ${error.message}.`
        : "This service needs a client key (CHATRELAY_API_KEYS).",
    );
    return;
  }
  showNotice(error instanceof ApiError ? `${error.message} (${error.code})` : String(error));
}

function streaming() {
  return messages.some((m) => m.role === "assistant" && m.status === "streaming");
}

// --- the client key ----------------------------------------------------------------------

function askForKey(reason) {
  ui.keyForm.hidden = false;
  $("key-reason").textContent = reason;
  ui.keyInput.value = clientKey();
  ui.keyInput.focus();
}

ui.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setClientKey(ui.keyInput.value.trim());
  ui.keyForm.hidden = true;
  showNotice("");
  start();
});
ui.keyButton.addEventListener("click", () => askForKey("The key is kept in this browser only."));

// --- conversations -----------------------------------------------------------------------

async function loadConversationList() {
  const page = await api("GET", "/v1/conversations?limit=50");
  ui.conversations.replaceChildren();
  for (const conversation of page.data) {
    const item = element("li");
    const link = element("a", "", conversation.title || "Untitled conversation");
    link.href = `#${conversation.id}`;
    if (conversation.id === conversationId) link.setAttribute("aria-current", "page");
    item.append(link);
    ui.conversations.append(item);
  }
}

async function openConversation(id, then = null) {
  stopFollowing();
  setConnection("");
  conversationId = id;
  if (!id) {
    messages = [];
    ui.title.textContent = "New conversation";
    renderMessages();
    return;
  }
  let conversation;
  try {
    conversation = await api("GET", `/v1/conversations/${id}`);
  } catch (error) {
    if (conversationId === id) {
      conversationId = null; // not one to post to: the next message starts a new one
      messages = [];
      renderMessages();
      if (error.status === 404) history.replaceState(null, "", location.pathname);
    }
    throw error;
  }
  if (conversationId !== id) return;
  ui.title.textContent = conversation.title || "Untitled conversation";
  messages = conversation.messages.filter((m) => !m.superseded_by);
  renderMessages();
  const target = then ?? [...messages].reverse().find((m) => m.status === "streaming");
  if (target) {
    // The conversation's messages carry no stream_url; the message itself does.
    followMessage(then ?? (await api("GET", `/v1/messages/${target.id}`)));
  }
}

// --- messages ----------------------------------------------------------------------------

function renderMessages() {
  views.clear();
  ui.messages.replaceChildren(...messages.map(messageView));
  updateComposer();
  ui.messages.lastElementChild?.scrollIntoView({ block: "end" });
}

function messageView(message) {
  const item = element("li", `message ${message.role}`);
  item.dataset.id = message.id;
  const header = element("div", "message-header");
  header.append(element("span", "role", message.role === "user" ? "You" : "Assistant"));
  const status = element("span", "status");
  header.append(status);
  const content = element("div", "content");
  const reasoning = element("details", "reasoning");
  reasoning.append(element("summary", "", "Reasoning"), element("div", "reasoning-text"));
  const error = element("p", "error");
  error.setAttribute("role", "alert");
  const actions = element("div", "actions");
  item.append(header, reasoning, content, error, actions);
  const view = { message, item, status, content, reasoning, error, actions };
  views.set(message.id, view);
  paint(view);
  return item;
}

/** Redraw one message from its data: text, status, error, the buttons that apply. */
function paint(view) {
  const { message } = view;
  if (message.role === "assistant") {
    view.content.replaceChildren(renderMarkdown(message.content ?? ""));
    view.item.dataset.status = message.status;
    view.item.setAttribute("aria-busy", String(message.status === "streaming"));
    view.status.textContent = STATUS_TEXT[message.status] ?? message.status;
  } else {
    view.content.textContent = message.content ?? "";
  }
  view.reasoning.hidden = !message.reasoning;
  view.reasoning.lastElementChild.textContent = message.reasoning ?? "";
  const error = message.error;
  view.error.hidden = !error;
  view.error.textContent = error ? `${error.message} (${error.code})` : "";
  // Buttons are rebuilt only when what applies changes, never per streamed piece, so a
  // keyboard user's focus on Stop survives the text growing around it.
  const applies = `${message.status}:${streaming()}`;
  if (view.actionsFor !== applies) {
    view.actionsFor = applies;
    view.actions.replaceChildren(...actionsFor(message));
  }
}

function actionsFor(message) {
  if (message.role === "assistant") {
    if (message.status === "streaming") return [button("Stop", () => cancel(message), "stop")];
    return [button("Regenerate", () => regenerate(message), "regenerate")];
  }
  if (message.role === "user" && !streaming()) {
    return [button("Edit", (event) => startEdit(message, event.target), "edit")];
  }
  return [];
}

let paintPending = new Set();
function schedulePaint(view) {
  paintPending.add(view);
  if (paintPending.size > 1) return;
  requestAnimationFrame(() => {
    const pending = paintPending;
    paintPending = new Set();
    const page = document.scrollingElement;
    const atBottom = page.scrollHeight - page.scrollTop - page.clientHeight < 80;
    for (const item of pending) paint(item);
    if (atBottom) page.scrollTop = page.scrollHeight; // follow the text unless scrolled up
  });
}

function replaceMessage(updated) {
  const index = messages.findIndex((m) => m.id === updated.id);
  if (index >= 0) messages[index] = updated;
  const view = views.get(updated.id);
  if (view) {
    view.message = updated;
    paint(view);
  }
  updateComposer();
}

// --- following the one stream ------------------------------------------------------------

function followMessage(message) {
  const view = () => views.get(message.id);
  let text = null; // what the stream delivered; null until its `start`
  let reasoning = "";
  follow(message, {
    start() {
      text = "";
      reasoning = "";
    },
    delta(piece) {
      if (text === null) return;
      text += piece;
      const v = view();
      if (!v) return;
      v.message = { ...v.message, content: text };
      schedulePaint(v);
    },
    reasoning(piece) {
      reasoning += piece;
      const v = view();
      if (!v) return;
      v.message = { ...v.message, reasoning };
      schedulePaint(v);
    },
    end(final, error, how = {}) {
      setConnection("");
      // The stream's text and the stored message must agree; if they ever do not, the
      // stored one is shown, and the mismatch is recorded where tests (and you) can see it.
      const v = view();
      if (v && text !== null && !how.fromApi && text !== final.content) {
        v.item.dataset.mismatch = "true";
        console.error("chatrelay: streamed text differs from the stored message", message.id);
      }
      replaceMessage({ ...final, error: final.error ?? error ?? null });
      for (const other of views.values()) paint(other); // Edit is offered again
      loadConversationList().catch(() => {});
    },
    state(name, detail) {
      if (name === "live") setConnection("");
      else if (name === "reconnecting") setConnection(`Reconnecting… (attempt ${detail})`);
      else if (name === "checking") setConnection("Reconnecting… checking the message");
      else if (name === "lost") setConnection(`Connection lost: ${detail}.`, true);
    },
  });
}

function setConnection(text, offerReconnect = false) {
  ui.connection.hidden = !text;
  ui.connection.dataset.state = offerReconnect ? "lost" : text ? "reconnecting" : "live";
  ui.connectionText.textContent = text;
  ui.reconnect.hidden = !offerReconnect;
}

ui.reconnect.addEventListener("click", () => {
  setConnection("Reconnecting…");
  resume();
});

// --- turns -------------------------------------------------------------------------------

async function send(content) {
  if (!conversationId) {
    const title = content.split("\n")[0].slice(0, 60);
    const conversation = await api("POST", "/v1/conversations", { title });
    conversationId = conversation.id;
    history.replaceState(null, "", `#${conversation.id}`);
    ui.title.textContent = conversation.title;
  }
  const posted = await api("POST", `/v1/conversations/${conversationId}/messages`, { content });
  messages.push(posted.user_message, posted.assistant_message);
  renderMessages();
  followMessage({ ...posted.assistant_message, stream_url: posted.stream_url });
  loadConversationList().catch(() => {});
}

async function afterTurn(posted) {
  await openConversation(conversationId, {
    ...posted.assistant_message,
    stream_url: posted.stream_url,
  });
}

const CANCEL_WAIT_MS = 3000;

async function cancel(message) {
  try {
    const cancelled = await api("POST", `/v1/messages/${message.id}/cancel`);
    // The stream brings its own `done` at once; if it does not (no stream, or a lost
    // connection), the cancel's answer is the news.
    const settle = () => {
      if (followedId() === message.id) stopFollowing();
      setConnection("");
      replaceMessage(cancelled);
      for (const other of views.values()) paint(other);
    };
    if (followedId() === message.id) {
      setTimeout(() => followedId() === message.id && settle(), CANCEL_WAIT_MS);
    } else {
      settle();
    }
  } catch (error) {
    if (!(error instanceof ApiError && error.code === "message_finished")) reportError(error);
  }
}

async function regenerate(message) {
  try {
    await afterTurn(await api("POST", `/v1/messages/${message.id}/regenerate`, {}));
  } catch (error) {
    reportError(error);
  }
}

function startEdit(message, trigger) {
  const view = views.get(message.id);
  const form = element("form", "edit-form");
  const id = `edit-${message.id}`;
  const label = element("label", "", "Edit your message");
  label.htmlFor = id;
  const area = element("textarea");
  area.id = id;
  area.value = message.content;
  area.rows = 3;
  const save = element("button", "", "Save and answer");
  save.type = "submit";
  const back = button("Cancel", () => {
    paint(view);
    trigger.isConnected ? trigger.focus() : ui.input.focus();
  });
  form.append(label, area, save, back);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const posted = await api("POST", `/v1/messages/${message.id}/edit`, { content: area.value });
      await afterTurn(posted);
    } catch (error) {
      reportError(error);
    }
  });
  view.content.replaceChildren(form);
  view.actions.replaceChildren();
  area.focus();
}

// --- the composer ------------------------------------------------------------------------

function updateComposer() {
  const busy = streaming();
  ui.send.disabled = busy;
  ui.send.title = busy ? "Wait for the answer, or stop it" : "";
}

ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const content = ui.input.value;
  if (!content.trim() || streaming()) return;
  ui.send.disabled = true;
  showNotice("");
  try {
    await send(content);
    ui.input.value = "";
  } catch (error) {
    reportError(error);
  } finally {
    updateComposer();
    ui.input.focus();
  }
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.newConversation.addEventListener("click", () => {
  history.pushState(null, "", location.pathname);
  openConversation(null).catch(reportError);
  loadConversationList().catch(reportError);
  ui.input.focus();
});

window.addEventListener("hashchange", () => {
  const id = location.hash.slice(1) || null;
  if (id === conversationId) return;
  showNotice("");
  openConversation(id)
    .then(() => loadConversationList())
    .catch(reportError);
});

async function start() {
  try {
    await openConversation(location.hash.slice(1) || null);
  } catch (error) {
    reportError(error);
  }
  loadConversationList().catch(reportError);
}

start();
