// A listener with its hand raised loses the connection: the server drops the
// hand with the old member. After the reconnect the client raises it again,
// so the moderators' queue does not silently lose it; one that lowered its
// hand, or was promoted meanwhile, does not.
import { check, clientOptions, handServer, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
const raised = [];
handServer(raised);
const client = new SfuClient(clientOptions("lou", "listener", { backoffInitial: 10, backoffMax: 20 }));
await client.join();
await client.raiseHand();
await sleep(20);
check(client.handRaised && raised.join() === "0", `hand not raised: ${raised.join()}`);
sockets[0].drop(1006);
await sleep(300);
check(client.state === "joined" && sockets.length === 2, `not back: ${client.state} ${sockets.length}`);
check(raised.join() === "0,1", `the hand was not raised again after the reconnect: ${raised.join()}`);
check(client.handRaised, "the hand shows lowered after the reconnect");
await client.lowerHand();
await sleep(20);
sockets[1].drop(1006);
await sleep(300);
check(client.state === "joined" && sockets.length === 3, `not back again: ${client.state}`);
check(raised.join() === "0,1" && !client.handRaised, `a lowered hand was raised: ${raised.join()}`);
await client.leave();
