// sign_official.mjs: signatures made by the providers' own npm libraries.
//   node sign_official.mjs github SECRET_FILE BODY_FILE   (@octokit/webhooks-methods sign)
//   node sign_official.mjs stripe T SECRET_FILE BODY_FILE (stripe.webhooks.generateTestHeaderString)
// Bare imports resolve from this file's folder up: the test copies this file
// next to a node_modules (a link to FERRY_HOOKS_NODE_MODULES) before running it.
import { readFileSync } from "node:fs";
import { sign } from "@octokit/webhooks-methods";
import Stripe from "stripe";

const secret = (p) => readFileSync(p, "utf8").replace(/[\r\n]+$/, "");
const [kind, ...a] = process.argv.slice(2);
if (kind === "github") {
  process.stdout.write((await sign(secret(a[0]), readFileSync(a[1], "utf8"))) + "\n");
} else if (kind === "stripe") {
  const stripe = new Stripe("sk_test_unused");
  const header = stripe.webhooks.generateTestHeaderString({
    payload: readFileSync(a[2], "utf8"),
    secret: secret(a[1]),
    timestamp: Number(a[0]),
  });
  process.stdout.write(header + "\n");
} else {
  process.exit(2);
}
