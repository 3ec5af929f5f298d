// A listener's hand raised again after a reconnect is still raised if the
// connection drops again before the server confirms it: the next join raises
// it again. One the server refuses to raise again shows lowered.
import { check, clientOptions, handServer, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
const raised = [];
let answerRaise = "yes"; // "yes", "never" (no reply) or "refuse"
handServer(raised, () => answerRaise);
const client = new SfuClient(clientOptions("lou", "listener", { backoffInitial: 10, backoffMax: 20 }));
await client.join();
await client.raiseHand();
await sleep(20);
check(client.handRaised && raised.join() === "0", `hand not raised: ${raised.join()}`);

answerRaise = "never"; // the re-raise is sent, and the connection drops before its answer
sockets[0].drop(1006);
await sleep(300);
check(client.state === "joined" && raised.join() === "0,1", `not raised again: ${raised.join()}`);
check(client.handRaised, "the hand shows lowered while it is raised again");
answerRaise = "yes";
sockets[1].drop(1006);
await sleep(300);
check(client.state === "joined" && sockets.length === 3, `not back again: ${client.state}`);
check(raised.join() === "0,1,2", `the hand was lost on the second drop: ${raised.join()}`);
check(client.handRaised, "the hand shows lowered after the second reconnect");

answerRaise = "refuse";
sockets[2].drop(1006);
await sleep(300);
check(client.state === "joined" && raised.join() === "0,1,2,3", `not raised again: ${raised.join()}`);
check(!client.handRaised, "a hand the server refused to raise again shows raised");
check(!client.roster.get("lou").hand, "the roster shows the refused hand raised");
await client.leave();
