// A hand raised in a session the page left is not raised again by the page's
// next join(): that is a new visit, not a reconnect.
import { check, clientOptions, handServer, sleep, sockets } from "./fake_browser.mjs";
const { SfuClient } = await import(process.env.SFU_JS);
console.warn = () => {};
const raised = [];
handServer(raised);
const client = new SfuClient(clientOptions("lou", "listener", { backoffInitial: 10, backoffMax: 20 }));
await client.join();
await client.raiseHand();
await sleep(20);
check(client.handRaised, "hand not raised");
await client.leave();
await client.join();
await sleep(100);
check(client.state === "joined" && sockets.length === 2, `not joined again: ${client.state}`);
check(raised.join() === "0", `the page's join raised the old hand: ${raised.join()}`);
check(!client.handRaised, "the new visit shows the old hand raised");
await client.leave();
