// The demo page's logic: lobby -> token -> SfuClient -> render the room.
// Everything about media and signaling is in /sfu.js; this file only renders.
import { SfuClient, tokenClaims } from "/sfu.js";
import {
  closedText,
  errorText,
  moderatingFromTheAudience,
  overruledText,
  refusalText,
  removalText,
  restartedText,
} from "./wording.js";

const $ = (selector) => document.querySelector(selector);
const ROLE_LABEL = { moderator: "Moderator", speaker: "", listener: "" };
const STATE_LABEL = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", closed: "Disconnected" };

let client = null;
let toastTimer = null;
// The lobby's request ({room, identity, role}) while the page's token came
// from the demo's POST /api/token; null for a ?token= link from a backend
// (then only that token joins: the page can get no other).
let demoRequest = null;

const params = new URLSearchParams(location.search);
if (params.get("room")) $("#room-input").value = params.get("room");

const ownerKeyName = (room) => `sfu-demo-owner:${room}`;
function storedItem(name) {
  try {
    return localStorage.getItem(name);
  } catch {
    return null; // storage disabled
  }
}

// This browser opened the room (it holds its owner key): back to it after a
// reload, it is its moderator again, so the form offers that.
function preselectModerator() {
  const room = $("#room-input").value.trim().normalize("NFC");
  if (room && storedItem(ownerKeyName(room))) $("input[name=role][value=moderator]").checked = true;
}
preselectModerator();
$("#room-input").addEventListener("change", preselectModerator);

// -- lobby ----------------------------------------------------------------------------------

async function demoToken(room, identity, role) {
  // A name in a room is this browser's once it has had a token for it (the
  // name key proves it later: a promoted name must not be anyone's to take).
  // The first moderator token of a room comes with a key that later ones
  // need (the opener's name alone is no proof: everyone in the room sees it).
  const nameKeyName = `sfu-demo-name:${room}:${identity}`;
  const keyName = ownerKeyName(room);
  const stored = storedItem; // (storage disabled: this browser cannot come back under the same name)
  const store = (name, value) => {
    try {
      localStorage.setItem(name, value);
    } catch {
      // as above
    }
  };
  // A key is made and kept before the first request: should its reply be lost
  // (a reload, a network blink) after the server recorded the claim, this
  // browser still holds the key the claim was recorded with.
  const keyFor = (name) => {
    const known = stored(name);
    if (known) return known;
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const key = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    store(name, key);
    return key;
  };
  let response;
  try {
    response = await fetch("/api/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        room,
        identity,
        role,
        name_key: keyFor(nameKeyName),
        // (Only a moderator's request claims a room: a listener's keeps no key for it.)
        owner_key: role === "moderator" ? keyFor(keyName) : stored(keyName),
      }),
    });
  } catch (err) {
    // fetch rejects (a TypeError, "Failed to fetch") when no reply came at all.
    const unreachable = new Error(`The token request got no reply: ${err && err.message}`);
    unreachable.code = "closed"; // what the lobby says: the server cannot be reached
    throw unreachable;
  }
  if (response.status === 404) {
    throw new Error("This server issues no demo tokens: open the page with ?token=… from your backend.");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const refused = new Error(body.error || `The token request failed (${response.status}).`);
    refused.code = body.code; // what the lobby says (refusalText)
    throw refused;
  }
  if (body.name_key) store(nameKeyName, body.name_key);
  if (body.owner_key) store(keyName, body.owner_key);
  return body.token;
}

$("#join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  // The server takes names in one spelling (composed, NFC): "é" typed or pasted
  // as "e" plus an accent is the same name, not a refusal.
  const room = $("#room-input").value.trim().normalize("NFC");
  const identity = $("#name-input").value.trim().normalize("NFC");
  const role = new FormData(event.target).get("role") || "listener";
  const button = $("#join-button");
  button.disabled = true;
  $("#join-error").textContent = "";
  $("#join-error").title = "";
  let token = null;
  try {
    token = await demoToken(room, identity, role);
    demoRequest = { room, identity, role };
    await enter(token);
  } catch (err) {
    if (!(token && offerLiveStreamIfFull(err, token))) showRefusal(err, role);
  } finally {
    button.disabled = false;
  }
});

// A full room still has a seat for everyone: the mix as a plain HTTP stream.
// The room is private (so are all the demo's): the stream takes the join token.
let liveStreamSrc = null; // the stream the overflow box plays, while it does

function offerLiveStream(room, token) {
  const box = $("#overflow");
  box.hidden = false;
  $("#overflow-room").textContent = room;
  // Said once it plays: the browser buffers a few seconds of a stream that just started.
  $("#overflow-status").textContent = "Its live stream is starting…";
  const audio = $("#overflow-audio");
  audio.hidden = false;
  audio.src = `/rooms/${encodeURIComponent(room)}/live.ogg?token=${encodeURIComponent(token)}`;
  const src = audio.src;
  liveStreamSrc = src;
  audio.play().catch(() => {
    // Autoplay refused (a page opened from a link, nothing clicked): the controls start it.
    if (liveStreamSrc === src) $("#overflow-status").textContent = "Press play to listen to its live stream.";
  });
}

$("#overflow-audio").addEventListener("playing", (event) => {
  if (liveStreamSrc && event.target.src === liveStreamSrc) {
    $("#overflow-status").textContent = "You are listening to its live stream.";
  }
});

// The stream ends with the room (or the server): the box must not go on saying it plays.
for (const type of ["ended", "error"]) {
  $("#overflow-audio").addEventListener(type, (event) => {
    if (!liveStreamSrc || event.target.src !== liveStreamSrc) return; // stopped on purpose
    liveStreamSrc = null;
    $("#overflow-status").textContent = "Its live stream has ended.";
    // Let the player go: its play button would replay what it still holds.
    const audio = event.target;
    audio.hidden = true;
    audio.removeAttribute("src");
    audio.load();
  });
}

// A listener that a full room cannot seat (at a join, or at a rejoin after its
// seat was taken) hears it anyway; true when it was offered the stream.
function offerLiveStreamIfFull(err, token) {
  const claims = tokenClaims(token);
  if (err.code !== "room_full" || claims.role !== "listener" || !claims.room) return false;
  offerLiveStream(claims.room, token);
  return true;
}

// Joining (this room once a seat frees, or another one) ends the overflow stream:
// nobody should hear a room twice, or two rooms at once.
function stopLiveStream() {
  liveStreamSrc = null;
  const audio = $("#overflow-audio");
  audio.pause();
  audio.removeAttribute("src");
  audio.load();
  $("#overflow").hidden = true;
}

// The lobby says what to change in the form; the server's own words (about
// API fields) stay in the title and the console, for developers.
function showRefusal(err, role) {
  const shown = $("#join-error");
  shown.textContent = refusalText(err, role);
  shown.title = err && err.message && err.message !== shown.textContent ? err.message : "";
  console.info("join refused:", err && err.code, err && err.message);
}

// `publish: false` enters without a microphone (a moderator token keeps moderating).
async function enter(token, { publish } = {}) {
  stopLiveStream();
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const next = new SfuClient({ url, token, audioContainer: $("#audio-sink"), ...(publish === false ? { publish } : {}) });
  next.on("state", render);
  next.on("connection", render);
  next.on("roster", render);
  next.on("hands", render);
  next.on("role", render);
  next.on("muted", render);
  next.on("active_speakers", render);
  next.on("speaking", render);
  // Joined from a ?token= link, nothing clicked yet: the browser holds the
  // room's audio back until the user asks for it.
  next.on("autoplay", ({ blocked }) => {
    if (next === client) $("#audio-button").hidden = !blocked;
  });
  next.on("error", (err) => {
    console.info("sfu.js error:", err && err.code, err && err.message); // the server's words, for developers
    // An error that ends the session (a refused reconnect) is followed at
    // once by "closed", whose notice says why: no toast to contradict it.
    queueMicrotask(() => {
      if (next === client && next.state !== "closed") toast(errorText(err), err && err.code);
    });
    render(); // a microphone that could not be opened changes the mic button
  });
  next.on("closed", (detail) => onClosed(next, detail));
  next.on("removed", (detail) => showNotice("removed", "Removed from the room", removalText(detail)));
  client = next;
  window.demo.client = next;
  $("#audience-list").replaceChildren(); // another room's pages
  $("#audience-load").dataset.next = "";
  $("#audience-load").textContent = "Show listeners";
  try {
    await next.join(); // throws (and the lobby shows why) when the join is refused
  } catch (err) {
    // A moderator without a microphone still runs the room: from the audience
    // (the same token, no sending line); the page's "Take the stage" brings
    // it on once the browser allows the microphone. Nobody else could moderate
    // the room meanwhile (it is this browser's).
    if (err && err.code === "microphone" && publish !== false && tokenClaims(token).role === "moderator") {
      await enter(token, { publish: false });
      toast(moderatingFromTheAudience(), "microphone");
      return;
    }
    throw err;
  }
  // A demo token's room is enough for a reload (the lobby asks for a new
  // token); a ?token= link keeps its token in the address, or a reload (and
  // the address copied) could not join again.
  if (demoRequest) history.replaceState(null, "", `?room=${encodeURIComponent(next.room)}`);
  // Anyone may join a room of the demo's by its name; a backend's link carries
  // this person's own token, not one to share.
  $("#share-button").hidden = !demoRequest;
  $("#lobby").hidden = true;
  $("#room").hidden = false;
  $("#controls").hidden = false;
  $("#topbar-room").hidden = false;
  $("#room-name").textContent = next.room;
  document.title = `${next.room} · sfu rooms`;
  render();
  // The room remembers a moderator's demotion by name: a "Speaker" join comes
  // back to the audience, a "Moderator" one without its rights. Said, so that
  // the choice made in the lobby is not silently overruled.
  const overruled = overruledText(tokenClaims(token).role, next.role, next.isModerator);
  if (overruled) toast(overruled);
}

// The server refused this session's token on a reconnect (not_allowed). The
// demo's own tokens are refused so after a restart (a new random secret),
// and the browser's stored keys still prove its name and room: it asks for
// a fresh token and enters again. A ban is refused again, and told as one.
async function enterAgain(closed, request) {
  const banner = $("#banner");
  banner.hidden = false;
  banner.dataset.kind = "rejoining";
  banner.textContent = "The server no longer accepted this session (it may have restarted). Joining again…";
  let fresh = null;
  try {
    fresh = await demoToken(request.room, request.identity, request.role);
    await enter(fresh);
    // (A toast of the join's own, as moderating from the audience, says more.)
    if ($("#toast").hidden) {
      toast("The server no longer accepted your session (it may have restarted), so the page joined the room again.");
    }
  } catch (err) {
    if (client !== closed && !(client && client.token === fresh)) return; // the person moved on meanwhile
    banner.hidden = true;
    // Refused again: not the restart (a ban of someone who had dropped, say), told as such.
    const text = err && err.code === "not_allowed" ? closedText({ reason: "not_allowed" }) : restartedText(err, request.role);
    showNotice("disconnected", "Disconnected", text);
  }
}

function onClosed(closed, detail) {
  if (closed !== client) return;
  $("#audio-button").hidden = true;
  render();
  if (detail.reason === "room_closed") {
    showNotice("room_closed", "This room has ended", detail.detail ? `The room closed: ${detail.detail}.` : "The room closed.");
  } else if (detail.reason === "left") {
    showNotice("left", "You left the room", "Come back any time.");
  } else if (offerLiveStreamIfFull({ code: detail.reason }, closed.token)) {
    showNotice("full", "The room filled up", "Your seat was taken while you were away: the room's live stream plays instead.");
  } else if (detail.reason === "not_allowed" && demoRequest && $("#room").hidden === false) {
    enterAgain(closed, demoRequest);
  } else if (detail.reason === "microphone" && tokenClaims(closed.token).role === "moderator" && $("#room").hidden === false) {
    // The microphone went away during a reconnect: a moderator goes on moderating, from the audience.
    enter(closed.token, { publish: false }).then(
      () => toast(moderatingFromTheAudience(), "microphone"),
      (err) => showNotice("disconnected", "Disconnected", closedText({ reason: err.code || "disconnected" }, "moderator")),
    );
  } else if (detail.reason === "removed") {
    // Usually the "removed" event said it already (and showNotice keeps it);
    // if the socket closed before that message came, say it here.
    showNotice("removed", "Removed from the room", removalText(null));
  } else if ($("#room").hidden === false) {
    showNotice("disconnected", "Disconnected", closedText(detail, closed.role));
  }
}

function showNotice(kind, title, text) {
  const notice = $("#notice");
  if (notice.dataset.kind === "removed" && !notice.hidden) return; // keep the more specific notice
  notice.dataset.kind = kind;
  $("#notice-title").textContent = title;
  $("#notice-text").textContent = text;
  notice.hidden = false;
}

$("#notice-button").addEventListener("click", () => {
  $("#notice").hidden = true;
  $("#notice").dataset.kind = "";
  $("#room").hidden = true;
  $("#controls").hidden = true;
  $("#topbar-room").hidden = true;
  $("#lobby").hidden = false;
  client = null;
  window.demo.client = null;
  document.title = "sfu rooms";
});

function toast(text, code = "") {
  const el = $("#toast");
  el.textContent = text;
  el.dataset.code = code || "";
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 4000);
}

// -- controls -------------------------------------------------------------------------------------

$("#mic-button").addEventListener("click", () => {
  if (!client) return;
  if (client.mutedBy) {
    // A moderator may lift a moderator's mute, its own too (the server allows it):
    // lifted, then the microphone is on.
    if (!client.isModerator) return;
    const c = client;
    c.muteParticipant(c.identity, false).then(() => c.setMuted(false)).then(render, () => {});
    return;
  }
  client.setMuted(!client.muted).catch(() => {});
  render();
});

$("#hand-button").addEventListener("click", () => {
  if (!client) return;
  (client.handRaised ? client.lowerHand() : client.raiseHand()).catch(() => {});
});

$("#leave-button").addEventListener("click", () => client && client.leave());
$("#audio-button").addEventListener("click", () => client && client.resumeAudio());

$("#share-button").addEventListener("click", async () => {
  if (!client) return;
  const link = `${location.origin}/?room=${encodeURIComponent(client.room)}`;
  try {
    await navigator.clipboard.writeText(link);
    toast("Invite link copied.");
  } catch {
    toast(link);
  }
});

function closeMenus(except = null) {
  for (const el of document.querySelectorAll(".person.menu-open")) if (el !== except) el.classList.remove("menu-open");
}

// Moderator actions, delegated from the cards' menus and the hands panel.
document.addEventListener("click", (event) => {
  const menuButton = event.target.closest(".menu-button");
  if (menuButton) {
    const el = menuButton.closest(".person");
    closeMenus(el);
    el.classList.toggle("menu-open");
    return;
  }
  closeMenus();
  const button = event.target.closest("button[data-action]");
  const holder = button && button.closest("[data-identity]");
  if (!button || !holder || !client) return;
  const identity = holder.dataset.identity;
  const actions = {
    promote: () => client.promote(identity),
    "take-stage": () => client.promote(identity, "moderator"),
    demote: () => client.demote(identity),
    "make-moderator": () => client.promote(identity, "moderator"),
    "step-down": () => client.demote(identity, "speaker"),
    mute: () => client.muteParticipant(identity, true),
    unmute: () => client.muteParticipant(identity, false),
    // No reason: the page has no field for one (the library's default says
    // "removed by a moderator"; the removed page names who did it).
    remove: () => client.remove(identity),
    // A removal alone lets the person join again at once; a ban keeps them out
    // (by name) for as long as the room is open.
    ban: () => client.remove(identity, { ban: true }),
    dismiss: () => client.lowerHand(identity),
  };
  const action = actions[button.dataset.action];
  if (!action) return;
  // A row of the listener pages goes once acted on (the next page goes on
  // from the server's cursor, which its leaving does not move); a refresh
  // shows who is left.
  const paged = holder.closest("#audience-list") ? holder : null;
  action().then(() => {
    if (paged && paged.isConnected) paged.remove();
  }, () => {});
});

// Every listener, a page at a time (the roster names only the first ones).
const AUDIENCE_PAGE = 100; // the most the server sends in one
$("#audience-load").addEventListener("click", async () => {
  if (!client) return;
  const button = $("#audience-load");
  if (button.disabled) return;
  const list = $("#audience-list");
  // From where the last page ended (a cursor: listeners leaving meanwhile
  // shift no one past it), or from the start.
  const after = button.dataset.after ? Number(button.dataset.after) : undefined;
  button.disabled = true; // one page at a time: a double click would fetch it twice
  const page = await client.audience({ after, limit: AUDIENCE_PAGE }).catch(() => null);
  button.disabled = false;
  if (!page) return;
  if (after === undefined) list.replaceChildren();
  for (const m of page.members) {
    const li = document.createElement("li");
    li.className = "hand";
    li.dataset.identity = m.identity;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.identity;
    who.title = m.identity;
    const buttons = document.createElement("span");
    const removals = [["remove", "Remove"], ["ban", "Remove and ban"]];
    setActions(buttons, m.canSpeak ? [["promote", "Invite"], ...removals] : removals);
    li.append(who, ...buttons.children);
    list.append(li);
  }
  const more = page.members.length === AUDIENCE_PAGE; // a short page was the last
  button.dataset.after = more ? String(page.next) : "";
  button.textContent = more ? "Show more" : "Refresh";
});

// -- rendering -----------------------------------------------------------------------------------

function hue(identity) {
  let h = 0;
  for (const ch of identity) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function initials(identity) {
  // Whole characters (code points), not UTF-16 halves: an emoji is one.
  const words = identity.split(/[\s._-]+/).filter(Boolean).map((word) => Array.from(word));
  const letters = words.length > 1 ? words[0][0] + words[1][0] : Array.from(identity).slice(0, 2).join("");
  return letters.toUpperCase();
}

const HAND_SVG =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M23 5.5V20c0 2.2-1.8 4-4 4h-7.3c-1.08 0-2.1-.43-2.85-1.19L1 14.83s1.26-1.23 1.3-1.25c.22-.19.49-.29.79-.29.22 0 .42.06.6.16.04.01 4.31 2.46 4.31 2.46V4c0-.83.67-1.5 1.5-1.5S11 3.17 11 4v7h1V1.5c0-.83.67-1.5 1.5-1.5S15 .67 15 1.5V11h1V2.5c0-.83.67-1.5 1.5-1.5s1.5.67 1.5 1.5V11h1V5.5c0-.83.67-1.5 1.5-1.5s1.5.67 1.5 1.5z"/></svg>';
const DOTS_SVG =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><circle cx="5" cy="12" r="2"/><circle cx="12" cy="12" r="2"/><circle cx="19" cy="12" r="2"/></svg>';
const MUTED_SVG =
  '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M19 11h-2c0 .74-.16 1.44-.45 2.07l1.46 1.46A6.96 6.96 0 0 0 19 11zm-4 .17V5a3 3 0 0 0-5.94-.6L15 10.34v.83zM4.27 3 3 4.27l6 6V11a3 3 0 0 0 4.5 2.6l1.5 1.5A5 5 0 0 1 7 11H5a7 7 0 0 0 6 6.92V21h2v-3.08a6.9 6.9 0 0 0 3.2-1.26L19.73 20 21 18.73 4.27 3z"/></svg>';

function card(identity) {
  let el = document.querySelector(`.person[data-identity="${CSS.escape(identity)}"]`);
  if (el) return el;
  el = document.createElement("div");
  el.className = "person";
  el.dataset.identity = identity;
  el.innerHTML = `
    <div class="avatar"><span class="initials"></span>
      <span class="badge badge-muted" title="Muted">${MUTED_SVG}</span>
      <span class="badge badge-hand" title="Hand raised">${HAND_SVG}</span>
      <button class="menu-button" type="button" aria-label="Moderator actions" aria-haspopup="menu" hidden>${DOTS_SVG}</button></div>
    <div class="name"></div>
    <div class="role-label"></div>
    <div class="actions" role="menu"></div>`;
  el.querySelector(".avatar").style.setProperty("--hue", hue(identity));
  el.querySelector(".initials").textContent = initials(identity);
  el.querySelector(".name").textContent = identity;
  el.querySelector(".name").title = identity;
  return el;
}

function setActions(container, wanted) {
  // Rebuild only when the set changes, so a click never lands on a replaced button.
  const key = wanted.map(([action]) => action).join(",");
  if (container.dataset.key === key) return;
  container.dataset.key = key;
  container.replaceChildren(
    ...wanted.map(([action, label]) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.action = action;
      button.textContent = label;
      return button;
    }),
  );
}

function render() {
  if (!client) return;
  const c = client;
  const live = c.state === "joined" && c.connectionState === "connected";
  const state = c.state === "closed" ? "closed" : c.state === "reconnecting" ? "reconnecting" : live ? "live" : "connecting";
  const pill = $("#connection-state");
  pill.dataset.state = state;
  pill.textContent = STATE_LABEL[state];
  $("#room").dataset.state = c.state;
  const banner = $("#banner");
  banner.hidden = c.state !== "reconnecting";
  banner.dataset.kind = c.state === "reconnecting" ? "reconnecting" : "";
  banner.textContent = "Connection lost. Reconnecting…";

  const stage = $("#stage");
  const audience = $("#audience");
  const members = [...c.roster.values()];
  // On the stage, shown by what it may do: a speaker that moderates (invited
  // from a moderator's seat in the audience) is one of its moderators, and a
  // "moderator" whose token withheld the grant is one of its speakers.
  const shownRole = (m) => (m.role === "listener" ? "listener" : m.moderates ? "moderator" : "speaker");
  const onStage = members
    .filter((m) => m.role !== "listener")
    .sort((a, b) => (shownRole(a) === "moderator" ? 0 : 1) - (shownRole(b) === "moderator" ? 0 : 1));
  const inAudience = members.filter((m) => m.role === "listener");
  const seen = new Set();
  for (const [container, list] of [[stage, onStage], [audience, inAudience]]) {
    list.forEach((m, index) => {
      const el = card(m.identity);
      seen.add(m.identity);
      const role = shownRole(m);
      el.dataset.role = role;
      el.dataset.muted = String(!!m.muted && m.role !== "listener");
      el.dataset.hand = String(!!m.hand);
      el.dataset.speaking = String(c.speaking.has(m.identity) && !m.muted);
      el.dataset.dominant = String(c.dominant === m.identity);
      el.classList.toggle("self", m.identity === c.identity);
      el.querySelector(".role-label").textContent = ROLE_LABEL[role] || "";
      const actions = [];
      if (c.isModerator && m.identity !== c.identity && c.state === "joined") {
        if (m.role === "listener") {
          // A client that can never send (a WHEP player) cannot take the stage.
          if (m.canSpeak !== false) actions.push(["promote", "Invite to speak"]);
        } else {
          // A moderator lifts only a moderator's mute; a self-muted speaker may
          // still be muted by one (then it cannot unmute itself).
          actions.push(m.moderatorMuted ? ["unmute", "Unmute"] : ["mute", "Mute"]);
          if (role === "speaker") actions.push(["make-moderator", "Make moderator"]);
          else actions.push(["step-down", "Remove as moderator"]);
          actions.push(["demote", "To audience"]);
        }
        actions.push(["remove", "Remove"], ["ban", "Remove and ban"]);
      } else if (c.isModerator && m.identity === c.identity && m.role === "listener" && c.state === "joined") {
        // Seated in the audience because the stage was full: back on it once a seat is free.
        actions.push(["take-stage", "Take the stage"]);
      }
      setActions(el.querySelector(".actions"), actions);
      el.querySelector(".menu-button").hidden = actions.length === 0;
      if (!actions.length) el.classList.remove("menu-open");
      if (container.children[index] !== el) container.insertBefore(el, container.children[index] || null);
    });
  }
  for (const el of document.querySelectorAll(".person")) if (!seen.has(el.dataset.identity)) el.remove();

  // The roster names the stage and the first listeners; `size` counts everyone.
  const size = Math.max(c.size, members.length);
  const listening = size - onStage.length;
  const unnamed = listening - inAudience.length;
  $("#member-count").textContent =
    `${size} ${size === 1 ? "person" : "people"} · ${onStage.length} on stage · ${listening} listening`;
  const more = $("#audience-more");
  more.hidden = unnamed <= 0;
  more.textContent = unnamed > 0 ? `and ${unnamed} more listening` : "";
  $("#audience-count").textContent = listening ? String(listening) : "";
  $("#audience-empty").hidden = listening > 0;

  // Hands queue, for moderators.
  const panel = $("#hands-panel");
  panel.hidden = !c.isModerator;
  const hands = $("#hands");
  const items = c.hands.map((identity) => {
    let li = hands.querySelector(`li[data-identity="${CSS.escape(identity)}"]`);
    if (!li) {
      li = document.createElement("li");
      li.className = "hand";
      li.dataset.identity = identity;
      li.innerHTML = `<span class="hand-icon">${HAND_SVG}</span><span class="who"></span>`;
      li.querySelector(".who").textContent = identity;
      li.querySelector(".who").title = identity; // a long name is cut short
      const buttons = document.createElement("span");
      const canSpeak = c.roster.get(identity)?.canSpeak !== false;
      setActions(buttons, canSpeak ? [["promote", "Invite"], ["dismiss", "Dismiss"]] : [["dismiss", "Dismiss"]]);
      li.append(...buttons.children);
    }
    return li;
  });
  for (const li of [...hands.children]) if (!items.includes(li)) li.remove();
  items.forEach((li, index) => {
    if (hands.children[index] !== li) hands.insertBefore(li, hands.children[index] || null);
  });
  // (The list names the oldest hands; the count is all of them.)
  $("#hands-count").textContent = c.handsTotal ? String(c.handsTotal) : "";
  $("#hands-empty").hidden = c.handsTotal > 0;

  // Bottom controls.
  const mic = $("#mic-button");
  mic.hidden = !c.canPublish;
  // On the stage, and the microphone could not be opened (blocked, gone): no voice goes out.
  const noMic = c.canPublish && !!c.microphoneError && !c.micTrack;
  const muted = c.muted || !!c.mutedBy || noMic;
  // A moderator muted by another may lift that mute itself (the button does).
  const lockedOut = !!c.mutedBy && !c.isModerator;
  mic.dataset.muted = String(muted);
  mic.disabled = lockedOut || noMic;
  mic.title = noMic
    ? c.microphoneError.message
    : lockedOut
      ? `Muted by ${c.mutedBy}`
      : c.mutedBy
        ? `Muted by ${c.mutedBy}: as a moderator you may unmute yourself`
        : muted ? "Unmute your microphone" : "Mute your microphone";
  mic.querySelector(".label").textContent = noMic
    ? "No microphone"
    : lockedOut ? "Muted by a moderator" : muted ? "Unmute" : "Mute";
  const hand = $("#hand-button");
  hand.hidden = c.canPublish;
  hand.dataset.raised = String(c.handRaised);
  hand.querySelector(".label").textContent = c.handRaised ? "Lower hand" : "Raise hand";
  $("#leave-button").disabled = c.state === "closed";
}

// -- test and console hooks ----------------------------------------------------------------------

window.demo = {
  client: null,
  /** SfuClient.stats(): per slot packets, level, energy, CSRC -> identity; outbound packets. */
  stats: () => (client ? client.stats() : Promise.resolve(null)),
  /** What the page shows, as data. */
  snapshot() {
    const people = [...document.querySelectorAll(".person")].map((el) => ({
      ...el.dataset,
      place: el.parentElement ? el.parentElement.id : null,
    }));
    return {
      state: client ? client.state : null,
      connection: client ? client.connectionState : null,
      role: client ? client.role : null,
      people,
      hands: client ? [...client.hands] : [],
      dominant: client ? client.dominant : null,
      slots: client ? [...client.slotParticipants] : [],
      notice: $("#notice").hidden ? null : $("#notice").dataset.kind,
    };
  },
  tokenClaims,
};

// ?token=... joins straight away with a token from another backend.
if (params.get("token")) {
  const token = params.get("token");
  enter(token).catch((err) => {
    if (!offerLiveStreamIfFull(err, token)) showRefusal(err, tokenClaims(token).role);
  });
}
