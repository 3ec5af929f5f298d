/*
 * sfu.js: the browser client of sfu rooms (Python package `sfu`).
 *
 * A plain ES module, no build step, no dependency. It speaks the JSON-over-
 * WebSocket protocol of docs/signaling.md and drives one RTCPeerConnection:
 *
 *   import { SfuClient } from "/sfu.js";
 *   const client = new SfuClient({ url: "ws://127.0.0.1:8080/ws", token });
 *   client.on("roster", (roster) => render(roster));
 *   await client.join();          // listener, or speaker when the token's role allows
 *   client.setMuted(true);
 *   await client.leave();
 *
 * Media: the client always offers and the server answers; offers are
 * non-trickle (ICE gathering completes first, the candidates are in the SDP).
 * A listener offers K recvonly audio lines (K = `slots`, default 3); a
 * speaker (token role "speaker" or "moderator") puts its microphone on the
 * first line (sendrecv) and K-1 recvonly lines after it. Line i carries
 * slot i. With K below the room's slot count the server sends the room mix
 * (without the client's own voice) on the first line instead. On `role_changed` about itself with `renegotiate: true` the client
 * adds (promotion) or drops (demotion) the microphone on the first line and
 * sends a new `offer` on the same connection.
 *
 * Who is in a slot comes from two places: `active_speakers` events (slot ->
 * {identity, csrc}) and, fresher, the CSRC of the packets each slot receiver
 * gets (RTCRtpReceiver.getContributingSources), mapped to an identity through
 * the CSRCs the events named (the room gives each member's voice its own),
 * as long as that member is in the room and the connection lasts.
 *
 * Events (client.on(type, fn); fn gets one argument):
 *   "state"           "new" | "connecting" | "joined" | "reconnecting" | "closed"
 *   "connection"      RTCPeerConnection.connectionState
 *   "joined"          the `joined` message
 *   "roster"          Map identity -> {identity, role, muted, moderatorMuted, hand, canSpeak,
 *                     moderates}
 *                     (muted: silenced either way; moderatorMuted: by a moderator, which a
 *                     moderator can lift; a self-mute only its owner can; canSpeak false:
 *                     its client can never send, e.g. a WHEP player: not to be promoted;
 *                     moderates: it may moderate, whatever its role says: a moderator
 *                     seated in the audience is a "listener", and one invited on the stage
 *                     from there a "speaker");
 *                     it names the stage and the room's first listeners (the server's
 *                     `roster_listeners`, 100 by default), this client always;
 *                     `client.size` counts everyone in the room
 *   "hands"           identities with a raised hand, oldest first: the first 100 (the
 *                     server's list); `client.handsTotal` counts them all. Sent at most
 *                     a few times a second; this client's own hand (`client.handRaised`)
 *                     is told at once
 *   "role"            {identity, role, by, renegotiate, moderates} for role changes of anyone
 *   "muted"           {identity, muted, by}
 *   "active_speakers" {slots, dominant}
 *   "slots"           array, per slot: identity or null (events + CSRC)
 *   "levels"          Map identity -> decoded audio level 0..1 (own mic included)
 *   "speaking"        Set of identities heard in the last `speakingHold` ms
 *                     ("active_speakers", "levels", "speaking" and "slots" are told
 *                     empty when the connection ends: leave, close, a reconnect; nobody
 *                     is heard until it is back)
 *   "removed"         {reason, by, banned}
 *   "closed"          {reason, code, detail?}: reason "left", "removed", "room_closed",
 *                     "replaced" (another connection took this member over with its
 *                     resume key), "disconnected" (first connection lost) or a fatal
 *                     error code
 *   "error"           SfuError {code, message, id}; code "microphone": it could not be
 *                     opened (also kept in `client.microphoneError` until one opens)
 *   "track"           {slot, track, audio}
 *   "autoplay"        {blocked}: true when the browser refused to play the room's audio
 *                     unasked (its autoplay policy: nothing on the page was clicked yet,
 *                     e.g. a page that joins from a link); call `client.resumeAudio()`
 *                     from a click to start it (`client.audioBlocked` says which)
 *
 * Reconnection: when the WebSocket closes without `leave()`, `removed` or
 * `room_closed` (or the peer connection fails, or a ping goes unanswered),
 * the client waits (backoff doubling from 0.5 s to 10 s, with jitter), then
 * joins again with the same token on a new RTCPeerConnection (a self-mute
 * and, for a listener, a raised hand are restored). A reconnect's join carries the
 * `resume_key` of the last `joined` (as `resume`): if the server has not noticed
 * yet that the old connection is gone (a phone that switched networks leaves
 * it half-open for up to ~30 s), that proves it is the same client, and the
 * server replaces the old member at once instead of refusing the join with
 * `duplicate_identity`; a reconnect refused so (a server that had not noticed,
 * and no key or a lost one) is tried again for `duplicateIdentityTimeout` (60 s),
 * then ends with that error. A page's own `join()` sends no key, and raises no
 * hand of the session it left. A microphone that cannot be opened then ends
 * the session with the "microphone" error
 * (a promoted listener goes back in listening instead), except a busy one
 * (NotReadableError, AbortError), which is tried again up to three times first.
 */

const CLOSE_REMOVED = 4001;
const CLOSE_ROOM_CLOSED = 4002;
const CLOSE_REPLACED = 4004;
// Errors after which joining again with the same token cannot succeed.
// On a join, not_found means the room is gone (a server that does not create rooms on
// demand); room_full on a rejoin means the seat was taken meanwhile: say so, do not loop.
// microphone: the device or the permission is gone; the app must ask the user
// (a reconnect first retries a failure that may pass, see MICROPHONE_RETRIES).
const FATAL_JOIN_ERRORS = new Set([
  "not_allowed",
  "room_closed",
  "bad_message",
  "invalid_offer",
  "not_found",
  "room_full",
  "microphone",
]);

// getUserMedia failures that may pass on their own: another program holds the
// device (NotReadableError), or the browser aborted the start (AbortError).
const TRANSIENT_MICROPHONE_ERRORS = new Set(["NotReadableError", "AbortError"]);
// A reconnect retries such a failure this many times (with its backoff) before
// it ends with the "microphone" error, as for a device that is gone.
const MICROPHONE_RETRIES = 3;
// A self-mute the server refused (rate_limited) is sent again after this long.
const SELF_MUTE_RETRY_MS = 1000;

/** An `error` message from the server, or a local failure (code "timeout", "closed", ...). */
export class SfuError extends Error {
  constructor(code, message, id = null) {
    super(message || code);
    this.name = "SfuError";
    this.code = code;
    this.id = id;
  }
}

/** The claims of a JWT, read without checking it (the server checks it). */
export function tokenClaims(token) {
  try {
    let b64 = String(token).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    b64 += "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

/** Whether a roster entry or `role_changed` names a member that may moderate
 * (the server says `moderates` only when the role does not say it). */
function moderates(entry) {
  return entry.moderates ?? entry.role === "moderator";
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function waitForGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    // Past the timeout, send what was gathered: loopback/host candidates
    // come first, and a slow interface must not block the join.
    const timer = setTimeout(done, timeoutMs);
    function done() {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve();
    }
    function check() {
      if (pc.iceGatheringState === "complete") done();
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

export class SfuClient {
  /**
   * @param {object} options
   * @param {string} options.url      WebSocket URL of the signaling endpoint (ws:// or wss://)
   * @param {string} options.token    join token (identity, room and role come from it)
   * @param {string} [options.room]   room name; default: the token's `room` claim
   * @param {number} [options.slots=3] how many slot streams to receive (the room's
   *   slot count; fewer: the server sends the room mix on the first line)
   * @param {boolean} [options.publish] offer a microphone at join; default: the token's role may publish.
   *   false joins as a listener, whatever the token and any promotion the room kept from an
   *   earlier visit (a moderator token keeps moderating)
   * @param {HTMLElement} [options.audioContainer] where the slot <audio> elements go (default: document.body)
   * @param {MediaTrackConstraints|boolean} [options.audio=true] getUserMedia audio constraints
   * @param {boolean} [options.reconnect=true]
   * @param {number} [options.levelInterval=200] ms between getStats() level polls (0: off)
   * @param {number} [options.speakingThreshold=0.01] decoded level (0..1) that counts as speech
   * @param {number} [options.speakingHold=700] ms a voice stays "speaking" after its last loud sample
   * @param {RTCConfiguration} [options.rtcConfiguration] default {iceServers: []} (the server is ICE-lite)
   * @param {number} [options.iceGatheringTimeout=5000] ms to wait for the browser's ICE
   *   gathering before an offer is sent with the candidates it has
   * @param {number} [options.requestTimeout=10000] ms to wait for the reply to a command
   * @param {number} [options.pingInterval=15000] ms between the client's pings on the
   *   signaling socket (a reply not coming in time counts as the connection lost)
   * @param {number} [options.backoffInitial=500] ms before the first reconnect attempt; it
   *   doubles per failed attempt, up to `backoffMax`
   * @param {number} [options.backoffMax=10000] the longest wait between reconnect attempts
   * @param {number} [options.joinTimeout=60000] ms to wait for `joined`: in a crowd a join
   *   waits its turn at the server (which gives up on it after 120 s), and a client that
   *   gave up sooner would only join again at the back of the queue
   * @param {number} [options.duplicateIdentityTimeout=60000] ms a reconnect keeps trying while
   *   the server refuses it with `duplicate_identity` (its old member is still in: the
   *   server drops it when its heartbeat goes unanswered, ~20-30 s); past it the session
   *   ends with that error (another client of the same identity holds the seat)
   * @param {boolean} [options.mutedOnPromotion] default true: promoted by someone else (a
   *   moderator, the backend), the microphone opens self-muted, so nobody is on the air
   *   before they choose to speak; `setMuted(false)` speaks
   */
  constructor(options) {
    const {
      url,
      token,
      room,
      slots = 3,
      publish,
      audioContainer,
      audio = true,
      reconnect = true,
      levelInterval = 200,
      speakingThreshold = 0.01,
      speakingHold = 700,
      iceGatheringTimeout = 5000,
      requestTimeout = 10000,
      joinTimeout = 60000,
      pingInterval = 15000,
      backoffInitial = 500,
      backoffMax = 10000,
      duplicateIdentityTimeout = 60000,
      rtcConfiguration = { iceServers: [] },
      mutedOnPromotion = true,
    } = options || {};
    if (!url) throw new TypeError("SfuClient: `url` (the signaling WebSocket URL) is required");
    if (!token) throw new TypeError("SfuClient: `token` (a join token) is required");
    const claims = tokenClaims(token);
    this.url = url;
    this.token = token;
    this.room = room || claims.room || null;
    this.identity = claims.sub || null;
    this.role = claims.role || "listener";
    // What the token allows (a listener token may be widened with `publish`);
    // the server's `joined` and `role_changed` say it again later.
    this.grants = Array.isArray(claims.grants) ? [...claims.grants] : null;
    this.slotCount = slots;
    // Set by `joined`: the first line carries the room mix, not slot 0.
    this.mixed = false;
    this.publishAtJoin = publish === undefined ? this.canPublish : !!publish;
    this.options = {
      audioContainer, audio, reconnect, levelInterval, speakingThreshold, speakingHold,
      iceGatheringTimeout, requestTimeout, joinTimeout, pingInterval, backoffInitial, backoffMax,
      duplicateIdentityTimeout, rtcConfiguration, mutedOnPromotion,
    };

    this.state = "new";
    this.connectionState = "new";
    /** @type {Map<string, {identity: string, role: string, muted: boolean, moderatorMuted: boolean, hand: boolean, canSpeak: boolean, moderates: boolean}>} */
    this.roster = new Map();
    this.size = 0; // members in the room, named in the roster or not
    this.hands = [];
    this.handsTotal = 0; // raised hands, listed in `hands` or not
    this.activeSpeakers = []; // per slot: null or {identity, csrc, level}
    this.dominant = null;
    this.slotParticipants = []; // per slot: identity or null
    this.levels = new Map();
    this.speaking = new Set();
    this.muted = false; // self-mute
    this.mutedBy = null; // moderator who muted us, when server-side muted by someone else
    this.handRaised = false;
    // The SfuError ("microphone") of the last microphone that could not be
    // opened, until one opens: promoted with it, the member is on the stage
    // without a voice (the "error" event said why).
    this.microphoneError = null;
    this.pc = null;
    this.ws = null;
    this.micStream = null;
    this.audioElements = [];
    // The browser refused to play the room's audio unasked (see resumeAudio).
    this.audioBlocked = false;

    this._listeners = new Map();
    this._pending = new Map();
    this._nextId = 1;
    this._csrcIdentity = new Map();
    this._lastLoud = new Map();
    this._ending = null; // {reason, code}: the close is expected, do not reconnect
    this._negotiation = Promise.resolve();
    this._levelTimer = null;
    this._pingTimer = null;
    this._lastHeard = 0; // performance.now() of the server's latest message
    this._reconnectAttempt = 0;
    this._microphoneRetries = 0; // transient microphone failures retried in this reconnect
    this._selfMuteAck = false; // the self-mute the server acknowledged last
    this._muteRequests = 0; // "mute" commands sent: only the latest one's refusal counts
    this._everJoined = false;
    this._reconnecting = false;
    this._joins = 0; // join() calls: a reconnect loop belongs to one
    this._publishing = false; // whether (re)connections offer a sending line
    this._micRequest = null; // the getUserMedia call under way, shared
    this._micRequestJoins = 0; // the join() that waits on it last
    this._heldEvents = null; // events received between `joined` and its being applied
    // The last `joined`'s resume_key: a reconnect's join sends it (`resume`).
    this._resumeKey = null;
    this._generation = 0; // bumps on each (re)connection; stale callbacks check it
  }

  // -- events -------------------------------------------------------------------------

  /** Subscribe; returns a function that unsubscribes. */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  once(type) {
    return new Promise((resolve) => {
      const off = this.on(type, (value) => {
        off();
        resolve(value);
      });
    });
  }

  _emit(type, value) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (err) {
        console.error(`sfu.js: a "${type}" listener threw`, err);
      }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  // -- properties -----------------------------------------------------------------------

  get canPublish() {
    return this.grants ? this.grants.includes("publish") : this._rolePublishes(this.role);
  }

  /** Whether it may moderate: a moderator seated in the audience (role "listener") too. */
  get isModerator() {
    return this.grants ? this.grants.includes("moderate") : this.role === "moderator";
  }

  /** The microphone track being sent, if any. */
  get micTrack() {
    return this.micStream ? this.micStream.getAudioTracks()[0] || null : null;
  }

  _rolePublishes(role) {
    return role === "speaker" || role === "moderator";
  }

  // -- life cycle -------------------------------------------------------------------------

  /** Join the room; resolves with the `joined` message once the answer is applied. */
  async join() {
    if (this.state !== "new" && this.state !== "closed") {
      throw new SfuError("already_joined", `join() called in state ${this.state}`);
    }
    if (!this.room) {
      // Not a join token (no room claim), and no `room` option: say so, not
      // "'join' needs a 'room' field" after a socket and a microphone opened.
      this._setState("closed");
      throw new SfuError("not_allowed", "the token names no room (is it a join token?); pass `room`");
    }
    this._ending = null;
    this._everJoined = false;
    this._resumeKey = null; // a page's join is no reconnect: it replaces nobody
    this.handRaised = false; // nor raises a hand of the session it left
    this.microphoneError = null;
    this._reconnectAttempt = 0;
    this._microphoneRetries = 0;
    // A reconnect loop of an earlier join (left while it slept) sees this and stops.
    const joins = ++this._joins;
    this._reconnecting = false;
    this._publishing = this.publishAtJoin; // a promotion or demotion changes it
    try {
      return await this._connect(this.publishAtJoin);
    } catch (err) {
      // Left and joined again meanwhile: the newer join's connection is not ours to end.
      if (joins !== this._joins) throw err;
      this._teardown();
      this._stopMicrophone(); // a refused join gives the microphone back
      this._setState("closed");
      throw err;
    }
  }

  /** Leave the room: tells the server, closes the WebSocket and the peer connection. */
  async leave() {
    if (this.state === "closed") return;
    this._ending = { reason: "left", code: 1000 };
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN && this.state === "joined") {
      try {
        await this._request("leave", {}, 2000);
      } catch {
        // Closing the socket leaves the room too.
      }
    }
    this._finish({ reason: "left", code: 1000 });
  }

  async _connect(publish) {
    const generation = ++this._generation;
    this._setState(this._everJoined ? "reconnecting" : "connecting");
    const ws = await this._openSocket(generation);
    const pc = new RTCPeerConnection(this.options.rtcConfiguration);
    this.pc = pc;
    pc.addEventListener("track", (event) => this._onTrack(pc, event));
    pc.addEventListener("connectionstatechange", () => this._onConnectionState(pc, generation));
    const K = this.slotCount;
    if (publish) {
      const track = await this._microphone();
      pc.addTransceiver(track, { direction: "sendrecv", streams: [this.micStream] });
      this._applyTrackEnabled();
    } else {
      pc.addTransceiver("audio", { direction: "recvonly" });
    }
    for (let i = 1; i < K; i++) pc.addTransceiver("audio", { direction: "recvonly" });
    const offer = await this._makeOffer(pc);
    if (generation !== this._generation) throw new SfuError("closed", "superseded");
    // Room events the server sends right after `joined` wait until the
    // joined state is applied (else that older snapshot would overwrite them).
    this._heldEvents = [];
    // Joining without a microphone asks to listen, whatever the token allows
    // (a moderator keeps moderating): a promotion the room kept from an
    // earlier visit must not open the microphone unasked. A promotion in this
    // visit makes its reconnects offer one (`_publishing`) and ask nothing.
    const role = publish ? undefined : "listener";
    // A reconnect proves it is this client (join() cleared the key): the
    // server replaces the member of the old connection should it still hold it.
    const resume = this._resumeKey || undefined;
    const joined = await this._request(
      "join", { room: this.room, token: this.token, offer, role, resume }, this.options.joinTimeout, ws);
    await pc.setRemoteDescription({ type: "answer", sdp: joined.answer });
    if (generation !== this._generation || ws.readyState !== WebSocket.OPEN) {
      // The socket closed, the client left, or the server ended the session
      // (removed, room closed) while the answer was applied.
      throw new SfuError(
        this._ending ? this._ending.reason : "closed",
        "the session ended during the join",
      );
    }
    this._onJoined(joined);
    // Seated in the audience (a moderator on a full stage, a promoted member
    // back to one): the microphone it offered is not used; give it back.
    if (!this.canPublish) this._stopMicrophone();
    const held = this._heldEvents || [];
    this._heldEvents = null;
    for (const message of held) this._dispatch(message);
    return joined;
  }

  _openSocket(generation) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (err) {
        reject(new SfuError("closed", `cannot open ${this.url}: ${err}`));
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.addEventListener("open", () => {
        opened = true;
        resolve(ws);
      });
      ws.addEventListener("message", (event) => {
        if (generation === this._generation) this._onMessage(event.data);
      });
      ws.addEventListener("close", (event) => {
        if (!opened) reject(new SfuError("closed", `cannot connect to ${this.url} (${event.code})`));
        if (generation === this._generation) this._onSocketClose(event);
      });
    });
  }

  async _makeOffer(pc) {
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc, this.options.iceGatheringTimeout);
    return pc.localDescription.sdp;
  }

  async _microphone() {
    // Leaving: no permission prompt for a session that is ending (a promotion
    // read while leave() waits for the server's "ok").
    if (this._ending || this.state === "closed") {
      throw new SfuError("closed", "the client left before the microphone was opened");
    }
    const live = this.micTrack;
    if (live && live.readyState === "live") return live;
    const joins = this._joins;
    // One request at a time: a promotion and a reconnect asking together
    // (a permission prompt open) share it, so one microphone is opened.
    const devices = globalThis.navigator && navigator.mediaDevices;
    if (!devices || typeof devices.getUserMedia !== "function") {
      // Browsers give a page a microphone only in a secure context: https, or
      // localhost (a page at http://192.0.2.10 has no navigator.mediaDevices).
      const failure = new SfuError(
        "microphone",
        "the microphone cannot be opened: this browser gives the page none (a page gets one only over https, or at localhost)",
      );
      failure.transient = false;
      this.microphoneError = failure;
      throw failure;
    }
    if (!this._micRequest) {
      this._micRequest = devices
        .getUserMedia({ audio: this.options.audio, video: false })
        .finally(() => (this._micRequest = null));
    }
    // The newest join waiting on the prompt holds what it opens.
    this._micRequestJoins = joins;
    let stream;
    try {
      stream = await this._micRequest;
    } catch (err) {
      // (A DOMException: NotAllowedError, NotFoundError... as one code the app can act on.)
      const failure = new SfuError("microphone", `the microphone cannot be opened: ${err && err.name ? `${err.name}: ${err.message}` : err}`);
      failure.transient = TRANSIENT_MICROPHONE_ERRORS.has(err && err.name);
      this.microphoneError = failure;
      throw failure;
    }
    this.microphoneError = null;
    if (this._ending || this.state === "closed" || joins !== this._joins) {
      // Left (or left and joined again) while the permission prompt was open:
      // give the microphone back at once, unless the session joined since
      // waits on the same prompt (it takes the stream).
      const taken = !this._ending && this.state !== "closed" && this._micRequestJoins === this._joins;
      if (!taken) for (const track of stream.getTracks()) track.stop();
      throw new SfuError("closed", "the client left while the microphone was being opened");
    }
    if (this.micStream !== stream) {
      if (this.micStream) for (const track of this.micStream.getTracks()) track.stop();
      this.micStream = stream;
    }
    return this.micTrack;
  }

  _stopMicrophone() {
    if (this.micStream) for (const track of this.micStream.getTracks()) track.stop();
    this.micStream = null;
  }

  _onJoined(joined) {
    this._resumeKey = typeof joined.resume_key === "string" ? joined.resume_key : null;
    this.identity = joined.identity;
    this.role = joined.role;
    if (Array.isArray(joined.grants)) this.grants = [...joined.grants];
    this.room = joined.room || this.room;
    this.mixed = !!joined.mixed;
    this.roster = new Map();
    for (const entry of joined.roster || []) {
      this.roster.set(entry.identity, {
        identity: entry.identity,
        role: entry.role,
        muted: !!entry.muted,
        // (A server that does not tell the two mutes apart: a mute at join is a moderator's.)
        moderatorMuted: !!(entry.moderator_muted ?? entry.muted),
        hand: !!entry.hand,
        canSpeak: entry.can_speak !== false, // (a server that does not say: anyone can)
        moderates: moderates(entry),
      });
    }
    if (!this.roster.has(this.identity)) {
      this.roster.set(this.identity, {
        identity: this.identity,
        role: this.role,
        muted: false,
        moderatorMuted: false,
        hand: false,
        canSpeak: true,
        moderates: this.isModerator,
      });
    }
    // (A server that does not say names everyone.)
    this.size = typeof joined.size === "number" ? joined.size : this.roster.size;
    // Its own hand as the roster says (the hands list may not name it).
    const own = this.roster.get(this.identity);
    // Its hand went with the old member: raised again below (at the back of
    // the queue), so a network blip does not silently take it down. It shows
    // raised meanwhile, so that another drop before the server confirms it
    // raises it again too.
    const raiseAgain = this.handRaised && !(own && own.hand) && !this.canPublish;
    this.handRaised = !!(own && own.hand) || raiseAgain;
    this._setHands(joined.hands || [], joined.hands_total, false);
    const me = this.roster.get(this.identity);
    // Muted at join: a moderator's mute that outlived a reconnect (self-mute
    // is restored below, after the join).
    this.mutedBy = me.moderatorMuted ? "a moderator" : null;
    const wasMuted = this.muted;
    this._everJoined = true;
    // The reconnect backoff restarts once media connects, not on `joined`:
    // a network that lets signaling through but not UDP must not loop fast.
    this._setState("joined");
    this._applyTrackEnabled();
    this._emit("joined", joined);
    this._emit("role", {
      identity: this.identity,
      role: this.role,
      by: null,
      renegotiate: false,
      moderates: this.isModerator,
    });
    this._emit("roster", this.roster);
    this._emit("hands", this.hands);
    if (joined.active_speakers) this._onActiveSpeakers(joined.active_speakers);
    this._startTimers();
    // A reconnection starts a new server-side participant: restore self-mute
    // (also under a moderator's mute, which outlives the reconnect on its own).
    this._selfMuteAck = false; // a new member on the server: not self-muted
    if (wasMuted && this.canPublish) this._sendSelfMute().catch(() => {});
    if (raiseAgain) {
      const generation = this._generation;
      this._request("raise_hand").catch((err) => {
        // Refused (or unanswered): the hand is down. One the connection's end
        // cut short ("closed") stays up for the next join to raise again.
        if (generation === this._generation && !(err instanceof SfuError && err.code === "closed")) {
          this._onOwnHand({ raised: false, by: null });
        }
      });
    }
  }

  _finish(detail) {
    if (this.state === "closed") return;
    this._ending = this._ending || detail;
    this._teardown();
    this._setState("closed");
    this._emit("closed", detail);
  }

  _teardown() {
    this._generation++;
    this._heldEvents = null;
    this._stopTimers();
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(new SfuError("closed", "the connection closed"));
    }
    this._pending.clear();
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
    }
    this._closePeer();
    if (this._ending) this._stopMicrophone();
    this._forgetHeard();
  }

  /**
   * The connection ended: who spoke and who held a slot were heard on it.
   * Nobody is shown speaking from then on, and the CSRCs it named go (the
   * next `joined` names the stage again): a reconnect or a later join()
   * credits no voice to a member from before.
   */
  _forgetHeard() {
    this._csrcIdentity.clear();
    this._lastLoud.clear();
    if (this.dominant !== null || this.activeSpeakers.some(Boolean)) {
      this.activeSpeakers = [];
      this.dominant = null;
      this._emit("active_speakers", { slots: this.activeSpeakers, dominant: null });
    }
    this.activeSpeakers = [];
    if (this.levels.size) {
      this.levels = new Map();
      this._emit("levels", this.levels);
    }
    if (this.speaking.size) {
      this.speaking = new Set();
      this._emit("speaking", this.speaking);
    }
    this._updateSlots(this.slotParticipants.map(() => null));
  }

  _closePeer() {
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    for (const audio of this.audioElements) {
      if (!audio) continue;
      audio.srcObject = null;
      audio.remove();
    }
    this.audioElements = [];
    this.connectionState = "closed";
  }

  _onSocketClose(event) {
    // Requests in flight will get no reply.
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject(new SfuError("closed", `the signaling connection closed (${event.code})`));
    }
    this._pending.clear();
    if (
      this._ending ||
      event.code === CLOSE_REMOVED ||
      event.code === CLOSE_ROOM_CLOSED ||
      event.code === CLOSE_REPLACED
    ) {
      // (Replaced: another connection holds this member now; joining again
      // would only take it back, or be refused.)
      const reasons = { [CLOSE_REMOVED]: "removed", [CLOSE_ROOM_CLOSED]: "room_closed" };
      const ending = this._ending || { reason: reasons[event.code] || "replaced", code: event.code };
      this._finish(ending);
      return;
    }
    if (!this.options.reconnect || !this._everJoined || this.state === "closed") {
      this._finish({ reason: "disconnected", code: event.code });
      return;
    }
    this._scheduleReconnect(`the signaling connection closed (${event.code})`);
  }

  /** Drop the current connection and join again with backoff (network drop). */
  _scheduleReconnect(why) {
    if (this._reconnecting) return; // the loop in progress handles it
    console.warn(`sfu.js: ${why}; reconnecting`);
    this._teardown();
    this._setState("reconnecting");
    this._reconnecting = true;
    const joins = this._joins;
    this._reconnectLoop(joins).finally(() => {
      if (joins === this._joins) this._reconnecting = false;
    });
  }

  async _reconnectLoop(joins) {
    const { backoffInitial, backoffMax } = this.options;
    // Over when the client leaves, or joins anew (leave() then join() while it slept).
    const over = () => this._ending || this.state === "closed" || joins !== this._joins;
    let duplicateSince = null; // when the server first refused it as a duplicate
    while (!over()) {
      const attempt = this._reconnectAttempt++;
      const delay = Math.min(backoffMax, backoffInitial * 2 ** attempt);
      await sleep(delay * (0.75 + Math.random() * 0.5));
      if (over()) return;
      try {
        // (A moderator seated in the audience offers one too: the stage may
        // have a seat for it now, and its token's role needs a sending line.)
        await this._connect(this._publishing && (this.canPublish || this.isModerator));
        this._microphoneRetries = 0;
        return;
      } catch (err) {
        if (
          err instanceof SfuError &&
          err.code === "microphone" &&
          err.transient &&
          this._microphoneRetries < MICROPHONE_RETRIES
        ) {
          // The device is busy for now (another program has it): try again
          // before giving up the stage or the session.
          this._microphoneRetries++;
          if (over()) return;
          console.warn(`sfu.js: reconnect attempt ${attempt + 1}: ${err.message}; trying again`);
          this._teardown();
          this._setState("reconnecting");
          continue;
        }
        if (
          err instanceof SfuError &&
          err.code === "microphone" &&
          this._publishing &&
          tokenClaims(this.token).role === "listener"
        ) {
          // Promoted, and the microphone is gone: back in as the listener it
          // joined as (the server asks for a sending line again; if that
          // fails too, it says so and the client goes on listening).
          this._emit("error", err);
          this._publishing = false;
          if (over()) return;
          this._teardown();
          this._setState("reconnecting");
          continue;
        }
        if (err instanceof SfuError && FATAL_JOIN_ERRORS.has(err.code)) {
          this._emit("error", err);
          this._finish({ reason: err.code, code: 0 });
          return;
        }
        // (A run of refusals: one another failure broke started none. A join
        // whose `joined` was lost left a member of its own, whose heartbeat
        // is to be waited out from its first refusal.)
        if (!(err instanceof SfuError && err.code === "duplicate_identity")) duplicateSince = null;
        else {
          // Longer than any heartbeat takes to drop a half-open connection:
          // another live client holds the seat (the same token on another
          // device). Retrying for ever would keep the microphone open here.
          duplicateSince ??= performance.now();
          if (performance.now() - duplicateSince >= this.options.duplicateIdentityTimeout) {
            this._emit("error", err);
            this._finish({ reason: err.code, code: 0 });
            return;
          }
        }
        // duplicate_identity: the old member is still in and the key sent
        // did not replace it (a server without resume keys, or a join whose
        // `joined` was lost on the way: its member holds a key this client
        // never saw); it goes when the server notices its connection is
        // gone (heartbeat, ~20-30 s). Network errors: not back yet. Try again.
        if (over()) return; // leave() (and maybe join()) meanwhile
        console.warn(`sfu.js: reconnect attempt ${attempt + 1} failed: ${err.message || err}`);
        this._teardown();
        this._setState("reconnecting");
      }
    }
  }

  _onConnectionState(pc, generation) {
    if (generation !== this._generation || pc !== this.pc) return;
    this.connectionState = pc.connectionState;
    if (pc.connectionState === "connected") this._reconnectAttempt = 0;
    this._emit("connection", pc.connectionState);
    if (pc.connectionState === "failed" && this.state === "joined" && this.options.reconnect) {
      this._scheduleReconnect("the media connection failed");
    }
  }

  _onTrack(pc, event) {
    if (pc !== this.pc) return;
    const slot = pc.getTransceivers().indexOf(event.transceiver);
    if (slot < 0) return;
    let audio = this.audioElements[slot];
    if (!audio) {
      audio = document.createElement("audio");
      audio.autoplay = true;
      audio.dataset.slot = String(slot);
      audio.dataset.sfu = "slot";
      (this.options.audioContainer || document.body).appendChild(audio);
      this.audioElements[slot] = audio;
    }
    audio.srcObject = new MediaStream([event.track]);
    // Chromium computes inbound audio levels only for audio that plays.
    audio.play().then(
      () => {
        // (A page clicked since, or a new connection's elements: all play now.)
        if (this.audioBlocked && this.audioElements.every((a) => !a || !a.paused)) {
          this._setAudioBlocked(false);
        }
      },
      (err) => {
        if (err && err.name === "NotAllowedError") this._setAudioBlocked(true);
        else console.warn(`sfu.js: audio.play() for slot ${slot}: ${err}`);
      },
    );
    this._emit("track", { slot, track: event.track, audio });
  }

  /**
   * Plays the room's audio that the browser's autoplay policy held back (an
   * "autoplay" event with blocked true). Call it from a user's click or key
   * press: the browser lets a page play sound once it has been interacted
   * with. Resolves true once every slot plays.
   */
  async resumeAudio() {
    const elements = this.audioElements.filter(Boolean);
    const results = await Promise.allSettled(elements.map((audio) => audio.play()));
    const blocked = results.some((r) => r.status === "rejected" && r.reason && r.reason.name === "NotAllowedError");
    this._setAudioBlocked(blocked);
    return !blocked;
  }

  _setAudioBlocked(blocked) {
    if (this.audioBlocked === blocked) return;
    this.audioBlocked = blocked;
    this._emit("autoplay", { blocked });
  }

  // -- signaling ------------------------------------------------------------------------

  _send(message, ws = this.ws) {
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new SfuError("closed", "not connected");
    ws.send(JSON.stringify(message));
  }

  /** Send a message with an id; resolves with the reply, rejects with an SfuError. */
  _request(type, fields = {}, timeoutMs = undefined, ws = this.ws) {
    const id = this._nextId++;
    const timeout = timeoutMs === undefined ? this.options.requestTimeout : timeoutMs;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SfuError("timeout", `no reply to ${type} within ${timeout} ms`, id));
      }, timeout);
      this._pending.set(id, { resolve, reject, timer, type });
      try {
        this._send({ type, id, ...fields }, ws);
      } catch (err) {
        clearTimeout(timer);
        this._pending.delete(id);
        reject(err);
      }
    });
  }

  /** A request whose failure is reported as an "error" event (and rethrown). */
  async _command(type, fields = {}) {
    try {
      return await this._request(type, fields);
    } catch (err) {
      this._emit("error", err);
      throw err;
    }
  }

  _onMessage(data) {
    this._lastHeard = performance.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("sfu.js: a message that is not JSON", data);
      return;
    }
    if (message === null || typeof message !== "object") return;
    const pending = message.id !== undefined && message.id !== null ? this._pending.get(message.id) : undefined;
    if (pending) {
      this._pending.delete(message.id);
      clearTimeout(pending.timer);
      if (message.type === "error") pending.reject(new SfuError(message.code, message.message, message.id));
      else pending.resolve(message);
      return;
    }
    // Held until `joined` is applied, but an end of the session is not:
    // it must reach the application even if the socket closes right after.
    if (this._heldEvents && message.type !== "removed" && message.type !== "room_closed") {
      this._heldEvents.push(message);
      return;
    }
    this._dispatch(message);
  }

  _dispatch(message) {
    switch (message.type) {
      case "roster":
        return this._onRoster(message);
      case "hands":
        return this._setHands(message.hands || [], message.total, true);
      case "hand":
        return this._onOwnHand(message);
      case "role_changed":
        return this._onRoleChanged(message);
      case "muted":
        return this._onMuted(message);
      case "active_speakers":
        return this._onActiveSpeakers(message);
      case "removed":
        this._ending = { reason: "removed", code: CLOSE_REMOVED };
        this._emit("removed", { reason: message.reason, by: message.by, banned: !!message.banned });
        // The server closes the socket (4001); do not wait for it to stop the media.
        this._finish({ reason: "removed", code: CLOSE_REMOVED });
        return;
      case "room_closed":
        this._ending = { reason: "room_closed", code: CLOSE_ROOM_CLOSED };
        this._finish({ reason: "room_closed", code: CLOSE_ROOM_CLOSED, detail: message.reason });
        return;
      case "error":
        this._emit("error", new SfuError(message.code, message.message, message.id ?? null));
        return;
      default:
        return; // pong, ok without a pending request, types from a newer server
    }
  }

  _onRoster(message) {
    for (const entry of message.joined || []) {
      const old = this.roster.get(entry.identity);
      this.roster.set(entry.identity, {
        identity: entry.identity,
        role: entry.role,
        muted: entry.muted ?? (old ? old.muted : false),
        moderatorMuted: entry.moderator_muted ?? (old ? old.moderatorMuted : false),
        hand: old ? old.hand : this.hands.includes(entry.identity),
        canSpeak: entry.can_speak ?? (old ? old.canSpeak : true),
        moderates: moderates(entry),
      });
    }
    for (const entry of message.updated || []) {
      const old = this.roster.get(entry.identity);
      const muted = entry.muted ?? (old ? old.muted : false);
      const moderatorMuted = entry.moderator_muted ?? (old ? old.moderatorMuted : false);
      const canSpeak = entry.can_speak ?? (old ? old.canSpeak : true);
      if (old) Object.assign(old, { role: entry.role, muted, moderatorMuted, canSpeak, moderates: moderates(entry) });
      // "updated" may name someone this client has not seen join (it left and
      // came back within one roster interval): added, with its hand as known.
      else {
        this.roster.set(entry.identity, {
          identity: entry.identity,
          role: entry.role,
          muted,
          moderatorMuted,
          hand: this.hands.includes(entry.identity),
          canSpeak,
          moderates: moderates(entry),
        });
      }
    }
    for (const identity of message.left || []) {
      if (identity === this.identity) continue;
      this.roster.delete(identity);
      this._lastLoud.delete(identity);
      // The last packets of its voice may still be fresh at a slot receiver:
      // they must not name a member who is gone.
      for (const [csrc, named] of this._csrcIdentity) {
        if (named === identity) this._csrcIdentity.delete(csrc);
      }
    }
    this.size = typeof message.size === "number" ? message.size : this.roster.size;
    this._emit("roster", this.roster);
  }

  _setHands(hands, total, emit) {
    const before = new Set(this.hands);
    this.hands = [...hands];
    this.handsTotal = typeof total === "number" ? total : this.hands.length;
    const raised = new Set(this.hands);
    // The list names the oldest hands only: a hand it leaves out is lowered
    // if the list is whole or named it before (the oldest leave it only so);
    // of the others nothing is known, and their flag stays.
    const whole = this.handsTotal <= this.hands.length;
    for (const entry of this.roster.values()) {
      if (raised.has(entry.identity)) entry.hand = true;
      else if (whole || before.has(entry.identity)) entry.hand = false;
    }
    // This client's own hand is told apart (`hand` messages).
    const me = this.roster.get(this.identity);
    if (me) me.hand = this.handRaised;
    if (emit) {
      this._emit("hands", this.hands);
      this._emit("roster", this.roster);
    }
  }

  _onOwnHand(message) {
    this.handRaised = !!message.raised;
    const me = this.roster.get(this.identity);
    if (me) me.hand = this.handRaised;
    this._emit("hands", this.hands);
    this._emit("roster", this.roster);
  }


  _onRoleChanged(message) {
    const entry = this.roster.get(message.identity);
    if (entry) Object.assign(entry, { role: message.role, moderates: moderates(message) });
    if (message.identity === this.identity) {
      // (Back in the audience after a reconnect to a full stage, a member
      // promoted earlier still offers its microphone: `_publishing` alone
      // does not say it is off the stage.)
      const couldPublish = this.canPublish;
      this.role = message.role;
      this.grants = Array.isArray(message.grants) ? [...message.grants] : null;
      if (message.renegotiate) {
        const publish = this.canPublish;
        const byOther = message.by !== this.identity; // (a moderator taking the stage itself)
        const promoted = !this._publishing || !couldPublish;
        if (publish && promoted && this.options.mutedOnPromotion && byOther) {
          // Brought on the stage by someone else: the microphone opens muted,
          // and the member unmutes when it chooses to speak.
          this.muted = true;
        }
        this._publishing = publish; // what a reconnect offers from now on
        this._queueNegotiation(() => (publish ? this._startPublishing() : this._stopPublishing()));
      } else if (this._publishing && !this.canPublish) {
        // Demoted before the server saw the sending line a promotion asked for
        // (it then asks for no offer): the microphone opened for it goes.
        this._publishing = false;
        this._queueNegotiation(() => this._stopPublishing());
      }
    }
    this._emit("role", message);
    this._emit("roster", this.roster);
  }

  _onMuted(message) {
    const entry = this.roster.get(message.identity);
    if (entry) {
      entry.muted = !!message.muted;
      if (message.moderator_muted !== undefined) entry.moderatorMuted = !!message.moderator_muted;
    }
    if (message.identity === this.identity) {
      // A moderator's mute, which we cannot undo ourselves.
      if (!message.moderator_muted) this.mutedBy = null;
      else if (message.by && message.by !== this.identity) this.mutedBy = message.by;
      else if (!this.mutedBy) this.mutedBy = "a moderator";
      if (entry) entry.muted = !!message.muted;
      this._applyTrackEnabled();
    }
    this._emit("muted", message);
    this._emit("roster", this.roster);
  }

  _onActiveSpeakers(message) {
    this.activeSpeakers = message.slots || [];
    this.dominant = message.dominant ?? null;
    for (const info of this.activeSpeakers) {
      if (info && typeof info.csrc === "number") this._csrcIdentity.set(info.csrc >>> 0, info.identity);
    }
    this._emit("active_speakers", { slots: this.activeSpeakers, dominant: this.dominant });
    this._updateSlots(this.activeSpeakers.map((info) => (info ? info.identity : null)));
  }

  _updateSlots(slots) {
    const changed =
      slots.length !== this.slotParticipants.length || slots.some((s, i) => s !== this.slotParticipants[i]);
    if (!changed) return;
    this.slotParticipants = slots;
    this._emit("slots", slots);
  }

  // -- renegotiation ------------------------------------------------------------------------

  _queueNegotiation(step) {
    const generation = this._generation;
    const run = this._negotiation.then(step).catch((err) => {
      // Left or reconnected meanwhile: that connection's failure is nobody's news.
      if (generation !== this._generation || this.state === "closed" || this._ending) return;
      console.error("sfu.js: renegotiation failed", err);
      this._emit("error", err instanceof SfuError ? err : new SfuError("negotiation", String(err)));
    });
    this._negotiation = run;
    return run;
  }

  async _startPublishing() {
    const pc = this.pc;
    if (!pc) return;
    const transceiver = pc.getTransceivers()[0];
    const track = await this._microphone(); // SfuError "microphone" when it cannot be opened
    if (pc !== this.pc) return;
    transceiver.direction = "sendrecv";
    await transceiver.sender.replaceTrack(track);
    if (transceiver.sender.setStreams) transceiver.sender.setStreams(this.micStream);
    this._applyTrackEnabled();
    await this._renegotiate(pc);
    // The server forgets a self-mute set before the promotion? Tell it again.
    if (this.muted) this._sendSelfMute().catch(() => {});
  }

  async _stopPublishing() {
    const pc = this.pc;
    if (!pc) return;
    const transceiver = pc.getTransceivers()[0];
    this._stopMicrophone();
    await transceiver.sender.replaceTrack(null);
    transceiver.direction = "recvonly";
    await this._renegotiate(pc);
  }

  async _renegotiate(pc) {
    const sdp = await this._makeOffer(pc);
    if (pc !== this.pc) return;
    const reply = await this._request("offer", { sdp });
    if (pc !== this.pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
  }

  // -- commands -------------------------------------------------------------------------------

  /** Self-mute: the microphone track is disabled (silence is sent) and the room is told. */
  setMuted(muted) {
    this.muted = !!muted;
    this._applyTrackEnabled();
    if (this.state === "joined") return this._sendSelfMute();
    return Promise.resolve();
  }

  /**
   * Tell the server the self-mute wanted now. Should the server refuse it
   * (rate_limited...), it keeps the one it had, so the page must not
   * show another: a refused unmute is undone here (else the page shows
   * "live" while nobody hears it); a refused mute keeps the microphone off
   * here and is sent again shortly (a mute is never undone by a refusal).
   */
  _sendSelfMute() {
    const muted = this.muted;
    const request = ++this._muteRequests;
    const generation = this._generation;
    return this._command("mute", { muted }).then(
      (reply) => {
        if (generation === this._generation) this._selfMuteAck = muted;
        return reply;
      },
      (err) => {
        // (Replies come in order: when the latest is refused, the earlier
        // ones are in, and the acknowledged state is the server's. A
        // connection lost meanwhile rejoins and sends the wanted state then.)
        const refused = err instanceof SfuError && err.code !== "closed" && err.code !== "timeout";
        if (refused && generation === this._generation && request === this._muteRequests) {
          this._selfMuteRefused(generation, request);
        }
        throw err;
      },
    );
  }

  _selfMuteRefused(generation, request) {
    if (this.muted === this._selfMuteAck) return;
    if (this._selfMuteAck) {
      this.muted = true;
      this._applyTrackEnabled();
      // (As the server tells a self-mute: the page shows the button muted again.)
      this._emit("muted", {
        identity: this.identity,
        muted: true,
        by: this.identity,
        moderator_muted: !!this.mutedBy,
        self_muted: true,
      });
      return;
    }
    setTimeout(() => {
      const wanted = generation === this._generation && request === this._muteRequests;
      if (wanted && this.state === "joined" && this.muted && !this._selfMuteAck) {
        this._sendSelfMute().catch(() => {});
      }
    }, SELF_MUTE_RETRY_MS);
  }

  _applyTrackEnabled() {
    const track = this.micTrack;
    if (track) track.enabled = !this.muted && !this.mutedBy;
  }

  /** Ask to speak (a listener): one that may publish already has no hand to raise ("not_allowed"). */
  raiseHand() {
    return this._command("raise_hand");
  }

  /** Lower your own hand, or (moderators) someone else's. */
  lowerHand(identity) {
    return this._command("lower_hand", identity ? { identity } : {});
  }

  promote(identity, role = "speaker") {
    return this._command("promote", { identity, role });
  }

  /** role "listener" (the default): off the stage; "speaker": a moderator
   * keeps its seat and microphone and loses only its moderator's rights. */
  demote(identity, role = "listener") {
    return this._command("demote", { identity, role });
  }

  muteParticipant(identity, muted = true) {
    return this._command("mute_participant", { identity, muted });
  }

  remove(identity, { reason, ban = false } = {}) {
    const fields = { identity, ban };
    if (reason) fields.reason = reason;
    return this._command("remove", fields);
  }

  ping() {
    return this._request("ping");
  }

  /**
   * A page of the audience, named by the roster or not, in the order they came:
   * resolves to {offset, next, members: [{identity, role, muted, moderatorMuted,
   * hand, canSpeak}], listeners (how many listen now)}. At most 100 a page.
   * Page on with {after: reply.next}: listeners leaving between pages shift an
   * offset (the next page would skip one), never that cursor.
   */
  async audience({ offset, limit = 100, after } = {}) {
    const fields = { limit };
    if (after !== undefined) fields.after = after;
    else fields.offset = offset === undefined ? 0 : offset;
    const reply = await this._command("audience", fields);
    return {
      offset: reply.offset,
      next: reply.next,
      listeners: reply.listeners,
      members: (reply.members || []).map((entry) => ({
        identity: entry.identity,
        role: entry.role,
        muted: !!entry.muted,
        moderatorMuted: !!entry.moderator_muted,
        hand: !!entry.hand,
        canSpeak: entry.can_speak !== false,
        moderates: moderates(entry),
      })),
    };
  }

  // -- levels, slots and stats -------------------------------------------------------------------

  _startTimers() {
    this._stopTimers();
    const generation = this._generation;
    if (this.options.levelInterval > 0) {
      this._levelTimer = setInterval(() => {
        if (generation === this._generation) this._pollLevels().catch(() => {});
      }, this.options.levelInterval);
    }
    if (this.options.pingInterval > 0) {
      this._pingTimer = setInterval(() => {
        if (generation !== this._generation || this.state !== "joined") return;
        // An unanswered ping means the network dropped without a close,
        // unless the server said something meanwhile: a burst of commands
        // may have had the ping refused (rate_limited carries no id).
        const sent = performance.now();
        this.ping().catch((err) => {
          const silent = err.code === "timeout" && this._lastHeard <= sent;
          const lost = silent || err.code === "closed";
          if (generation === this._generation && lost && !this._ending && this.options.reconnect) {
            this._scheduleReconnect("a ping went unanswered");
          }
        });
      }, this.options.pingInterval);
    }
  }

  _stopTimers() {
    clearInterval(this._levelTimer);
    clearInterval(this._pingTimer);
    this._levelTimer = this._pingTimer = null;
  }

  /**
   * One entry per slot: packets, bytes, decoded level, energy, the CSRC of
   * the last packets and who that is. `outbound`: packets sent and the
   * microphone's level.
   */
  async stats() {
    const pc = this.pc;
    if (!pc) return { slots: [], outbound: null };
    const report = await pc.getStats();
    const transceivers = pc.getTransceivers();
    const byMid = new Map();
    let outbound = null;
    let source = null;
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") byMid.set(String(s.mid), s);
      else if (s.type === "outbound-rtp" && s.kind === "audio") outbound = s;
      else if (s.type === "media-source" && s.kind === "audio") source = s;
    });
    const slots = transceivers.map((t, slot) => {
      const s = byMid.get(String(t.mid)) || {};
      const csrcs = t.receiver.getContributingSources();
      const latest = csrcs.reduce((a, b) => (!a || b.timestamp > a.timestamp ? b : a), null);
      const csrc = latest && performance.timeOrigin + performance.now() - latest.timestamp < 1000 ? latest.source >>> 0 : null;
      const audio = this.audioElements[slot];
      return {
        slot,
        mid: t.mid,
        direction: t.currentDirection || t.direction,
        ssrc: s.ssrc ?? null,
        packetsReceived: s.packetsReceived || 0,
        bytesReceived: s.bytesReceived || 0,
        packetsLost: s.packetsLost || 0,
        audioLevel: s.audioLevel || 0,
        totalAudioEnergy: s.totalAudioEnergy || 0,
        totalSamplesReceived: s.totalSamplesReceived || 0,
        concealedSamples: s.concealedSamples || 0,
        jitter: s.jitter || 0,
        csrc,
        // The mix names its loudest contributor only by CSRC; a slot, also by who holds it.
        identity:
          csrc !== null
            ? this._csrcIdentity.get(csrc) ?? null
            : this.mixed
              ? null
              : this.slotParticipants[slot] ?? null,
        playing: audio ? !audio.paused : false,
      };
    });
    return {
      slots,
      outbound: outbound
        ? {
            ssrc: outbound.ssrc,
            packetsSent: outbound.packetsSent || 0,
            bytesSent: outbound.bytesSent || 0,
            audioLevel: source ? source.audioLevel || 0 : 0,
            totalAudioEnergy: source ? source.totalAudioEnergy || 0 : 0,
          }
        : null,
    };
  }

  async _pollLevels() {
    if (this.state !== "joined" || !this.pc) return;
    const generation = this._generation;
    const { slots, outbound } = await this.stats();
    if (generation !== this._generation || this.state !== "joined") return; // closed meanwhile
    const now = performance.now();
    const levels = new Map();
    const slotIdentities = [];
    for (const s of slots) {
      // CSRC first (packet-accurate), else the last active_speakers event.
      // The mix is named by its CSRC only (see stats()), a slot also by its holder.
      // A fresh CSRC not named yet is a new holder the (debounced) event has
      // not told of: nobody, rather than crediting the one before it.
      const identity =
        s.csrc !== null ? s.identity : this.mixed ? null : this.activeSpeakers[s.slot]?.identity ?? null;
      slotIdentities.push(identity);
      if (identity) levels.set(identity, Math.max(levels.get(identity) || 0, s.audioLevel));
    }
    if (outbound && this.identity && this.micTrack && this.micTrack.enabled) {
      levels.set(this.identity, Math.max(levels.get(this.identity) || 0, outbound.audioLevel));
    }
    this._updateSlots(slotIdentities);
    this.levels = levels;
    this._emit("levels", levels);
    const { speakingThreshold, speakingHold } = this.options;
    for (const [identity, level] of levels) {
      if (level >= speakingThreshold) this._lastLoud.set(identity, now);
    }
    const speaking = new Set();
    for (const [identity, at] of this._lastLoud) {
      if (now - at <= speakingHold && this.roster.has(identity)) speaking.add(identity);
      else if (now - at > speakingHold) this._lastLoud.delete(identity);
    }
    const changed = speaking.size !== this.speaking.size || [...speaking].some((i) => !this.speaking.has(i));
    if (changed) {
      this.speaking = speaking;
      this._emit("speaking", speaking);
    }
  }
}

// For pages that load this file as a module but want a global (e.g. from the console).
if (typeof window !== "undefined" && !window.SfuClient) window.SfuClient = SfuClient;
