// Following one message's event stream: at most one EventSource per tab.
//
// Reconnection is the browser's own: after a dropped connection EventSource waits the
// `retry` the service sent and reconnects with `Last-Event-ID`, and the service answers
// with exactly the events after it, so text is never repeated or lost. This module only
// bounds it: after MAX_RETRIES failed attempts in a row with no event in between, or when
// the browser itself gives up (a non-200 answer, such as 204 at the end or 401 for an
// expired token), it asks the API for the message and, if it is still streaming, opens one
// new stream from the last id it saw with a fresh `stream_url`, at most MAX_REOPENS times.
// Then it stops and says so; `resume()` starts again on request.

import { api } from "./api.js";

export const MAX_RETRIES = 4;
export const MAX_REOPENS = 2;

let current = null;

/** The id of the message being followed, or null. */
export function followedId() {
  return current?.message.id ?? null;
}

/** Stop following (closing the stream); nothing more is reported. */
export function stopFollowing() {
  if (current) current.source?.close();
  current = null;
}

/**
 * Follow `message` (with its `stream_url`), closing any other stream of this tab.
 * `on` has start(message), delta(text), reasoning(text), end(message, error),
 * state(name, detail) with name "live", "reconnecting", "checking" or "lost".
 * `lastId` resumes after that event; null replays from `start`.
 */
export function follow(message, on, lastId = null) {
  stopFollowing();
  const follower = { message, on, lastId, failures: 0, reopens: 0, source: null };
  current = follower;
  open(follower, message.stream_url);
}

/** Try again after "lost": the same stream, from the last event seen. */
export function resume() {
  if (!current) return;
  current.failures = 0;
  current.reopens = 0;
  recover(current);
}

function withLastId(url, lastId) {
  if (lastId === null) return url;
  const full = new URL(url, location.href);
  full.searchParams.set("last_event_id", lastId);
  return full.href;
}

function open(follower, url) {
  const source = new EventSource(withLastId(url, follower.lastId));
  follower.source = source;
  const live = () => follower === current;
  const seen = (event) => {
    if (event.lastEventId) follower.lastId = event.lastEventId;
    if (follower.failures) follower.on.state("live");
    follower.failures = 0;
  };
  const finish = (message, error) => {
    source.close();
    current = null;
    follower.on.end(message, error);
  };
  source.addEventListener("open", () => live() && follower.on.state("live"));
  source.addEventListener("start", (event) => {
    if (!live()) return;
    seen(event);
    follower.on.start(JSON.parse(event.data).message);
  });
  source.addEventListener("delta", (event) => {
    if (!live()) return;
    seen(event);
    follower.on.delta(JSON.parse(event.data).content);
  });
  source.addEventListener("reasoning", (event) => {
    if (!live()) return;
    seen(event);
    follower.on.reasoning(JSON.parse(event.data).content);
  });
  source.addEventListener("done", (event) => {
    if (!live()) return;
    seen(event);
    finish(JSON.parse(event.data).message, null);
  });
  source.addEventListener("error", (event) => {
    if (!live()) return;
    // The stream's own terminal `error` event carries data; EventSource's connection
    // error (same name) is a plain Event without it.
    if (typeof event.data === "string") {
      seen(event);
      const payload = JSON.parse(event.data);
      finish(payload.message, payload.error);
      return;
    }
    follower.failures += 1;
    if (source.readyState === EventSource.CONNECTING && follower.failures <= MAX_RETRIES) {
      follower.on.state("reconnecting", follower.failures);
      return;
    }
    source.close();
    recover(follower);
  });
}

async function recover(follower) {
  follower.on.state("checking");
  let message;
  try {
    message = await api("GET", `/v1/messages/${follower.message.id}`);
  } catch (error) {
    if (follower === current) follower.on.state("lost", error.message);
    return;
  }
  if (follower !== current) return;
  if (message.status !== "streaming") {
    current = null;
    follower.on.end(message, message.error, { fromApi: true });
  } else if (follower.reopens < MAX_REOPENS) {
    follower.reopens += 1;
    follower.failures = 0;
    open(follower, message.stream_url);
  } else {
    follower.on.state("lost", "the stream keeps failing");
  }
}
