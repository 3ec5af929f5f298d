// Stand-ins for the browser APIs sfu.js uses, so its connection logic can be
// driven step by step under Node: a WebSocket whose "server" is a function
// of the test, an RTCPeerConnection whose setRemoteDescription takes
// `answerDelayMs`, and a microphone whose tracks record whether they stopped.
// Nothing here touches a network. A `leave` the test's server leaves
// unanswered is answered as the real server does (see `setAnswerLeave`).

export const sockets = [];
export const peers = [];
export const tracks = [];
let serve = () => {};
export let answerDelayMs = 20;
let answerLeave = true;

/** The fake server: `handler(socket, message)` for every message a client sends. */
export function onClientMessage(handler) {
  serve = handler;
}

export function setAnswerDelay(ms) {
  answerDelayMs = ms;
}

/**
 * Whether a `leave` the test's server neither answers nor closes the socket
 * on gets the real server's answer (docs/signaling.md: `ok`, then the socket
 * closes). On by default: otherwise every leave() at the end of a scenario
 * waits out its 2 s timeout. Off: the leave goes unanswered, as a server
 * that is gone would leave it.
 */
export function setAnswerLeave(on) {
  answerLeave = on;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class FakeWebSocket extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url) {
    super();
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.answered = new Set(); // ids of the requests the server replied to
    sockets.push(this);
    setTimeout(() => {
      if (this.readyState !== FakeWebSocket.CONNECTING) return;
      this.readyState = FakeWebSocket.OPEN;
      this.dispatchEvent(new Event("open"));
    }, 1);
  }

  send(text) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error("the socket is not open");
    const message = JSON.parse(text);
    setTimeout(() => {
      serve(this, message);
      const unanswered = this.readyState === FakeWebSocket.OPEN && !this.answered.has(message.id);
      if (answerLeave && message.type === "leave" && unanswered) {
        this.reply({ type: "ok", id: message.id });
        this.drop(1000);
      }
    }, 1);
  }

  /** The server sends `message` to this client. */
  reply(message) {
    if (this.readyState !== FakeWebSocket.OPEN) return;
    if (message.id !== undefined) this.answered.add(message.id);
    const event = new Event("message");
    event.data = JSON.stringify(message);
    this.dispatchEvent(event);
  }

  close(code = 1000) {
    this.drop(code);
  }

  /** The connection ends (the network dropped it, or the server closed it). */
  drop(code = 1006) {
    if (this.readyState >= FakeWebSocket.CLOSING) return;
    this.readyState = FakeWebSocket.CLOSED;
    const event = new Event("close");
    event.code = code;
    event.reason = "";
    setTimeout(() => this.dispatchEvent(event), 0);
  }
}

class FakePeerConnection extends EventTarget {
  constructor() {
    super();
    this.transceivers = [];
    this.iceGatheringState = "complete";
    this.connectionState = "new";
    this.closed = false;
    peers.push(this);
  }

  addTransceiver(trackOrKind, init) {
    const track = typeof trackOrKind === "string" ? null : trackOrKind;
    const transceiver = {
      direction: init.direction,
      mid: String(this.transceivers.length),
      sender: { track, replaceTrack: async (next) => (transceiver.sender.track = next) },
      receiver: { getContributingSources: () => [] },
    };
    this.transceivers.push(transceiver);
    return transceiver;
  }

  getTransceivers() {
    return this.transceivers;
  }

  async createOffer() {
    return { type: "offer", sdp: "v=0\r\n" };
  }

  async setLocalDescription(description) {
    this.localDescription = description;
  }

  async setRemoteDescription(description) {
    await sleep(answerDelayMs);
    if (this.closed) throw new Error("the peer connection is closed");
    this.remoteDescription = description;
  }

  close() {
    this.closed = true;
    this.connectionState = "closed";
  }

  async getStats() {
    return new Map();
  }
}

class FakeTrack {
  constructor() {
    this.kind = "audio";
    this.readyState = "live";
    this.enabled = true;
    tracks.push(this);
  }

  stop() {
    this.readyState = "ended";
  }
}

class FakeStream {
  constructor(list) {
    this.list = list;
  }

  getTracks() {
    return this.list;
  }

  getAudioTracks() {
    return this.list;
  }
}

globalThis.WebSocket = FakeWebSocket;
globalThis.RTCPeerConnection = FakePeerConnection;
globalThis.MediaStream = class {};
Object.defineProperty(globalThis, "navigator", {
  value: { mediaDevices: { getUserMedia: async () => new FakeStream([new FakeTrack()]) } },
  configurable: true,
});
const element = () => ({ dataset: {}, remove() {}, play: async () => {}, paused: false });
globalThis.document = { createElement: element, body: { appendChild() {} } };
globalThis.window = globalThis;

/** An unsigned token with these claims (sfu.js only reads them; the fake server checks nothing). */
export function token(claims) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}.x`;
}

/** SfuClient options for `identity` in room "hall" (no level or ping timers unless asked). */
export function clientOptions(identity, role, extra = {}) {
  const grants = role === "listener" ? ["subscribe"] : ["publish", "subscribe"];
  return {
    url: "ws://sfu.invalid/ws",
    token: token({ sub: identity, room: "hall", role, grants }),
    levelInterval: 0,
    pingInterval: 0,
    ...extra,
  };
}

/** The `joined` reply of the fake server. */
export function joinedReply(id, identity, role, extra = {}) {
  const grants = role === "listener" ? ["subscribe"] : ["publish", "subscribe"];
  return {
    type: "joined",
    id,
    identity,
    role,
    grants,
    answer: "v=0\r\n",
    room: "hall",
    slots: 3,
    roster: [{ identity, role, muted: false, hand: false }],
    hands: [],
    active_speakers: { slots: [null, null, null], dominant: null },
    ...extra,
  };
}

/**
 * A speaker "alice" joined to a fake server that accepts every message, with
 * quick reconnects; `errors` collects the codes of its error events.
 */
export async function joinedSpeaker(SfuClient) {
  setAnswerDelay(5);
  onClientMessage((socket, m) => {
    if (m.type === "join") socket.reply(joinedReply(m.id, "alice", "speaker"));
    else socket.reply({ type: "ok", id: m.id });
  });
  const client = new SfuClient(clientOptions("alice", "speaker", { backoffInitial: 10, backoffMax: 20 }));
  const errors = [];
  client.on("error", (e) => errors.push(e.code));
  await client.join();
  return { client, errors };
}

/** Fail the scenario (the Python test reads the exit status and this line). */
export function check(condition, message) {
  if (!condition) {
    console.log(`FAILED: ${message}`);
    process.exit(1);
  }
}

/**
 * A fake server for the listener "lou" that answers `raise_hand` and
 * `lower_hand` as the real one does (`ok`, then `hand`) and everything else
 * with `ok`; `raised` gets, for each `raise_hand`, the index of its socket.
 * `raiseAnswer()` may instead say "never" (no reply) or "refuse" (refused
 * as `rate_limited`).
 */
export function handServer(raised, raiseAnswer = () => "yes") {
  onClientMessage((socket, m) => {
    if (m.type === "join") socket.reply(joinedReply(m.id, "lou", "listener"));
    else if (m.type === "raise_hand") {
      raised.push(sockets.indexOf(socket));
      const answer = raiseAnswer();
      if (answer === "yes") {
        socket.reply({ type: "ok", id: m.id });
        socket.reply({ type: "hand", raised: true });
      } else if (answer === "refuse") {
        socket.reply({ type: "error", id: m.id, code: "rate_limited", message: "too many commands" });
      }
    } else if (m.type === "lower_hand") {
      socket.reply({ type: "ok", id: m.id });
      socket.reply({ type: "hand", raised: false });
    } else socket.reply({ type: "ok", id: m.id });
  });
}
