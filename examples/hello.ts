// The README's demo: every chained call is one cached step.
// WHEELS_URL points at a Python package index; `npm run demo` serves fixtures/wheels on loopback for it.
import { Image } from "strata";

export default Image.debianSlim({ pythonVersion: "3.11" })
  .aptInstall("jq")
  // The demo's wheel index listens on host loopback, which a sandboxed step cannot reach: this one step asks for the
  // host network (the network.host entitlement; a local build grants it to a step that asks).
  .pipInstall("tinypkg==1.0", { indexUrl: process.env.WHEELS_URL, network: "host" })
  .env({ GREETING: "hi" })
  .runCommands("echo $GREETING > /greeting")
  .runFunction(async (name: string) => {
    (await import("node:fs")).writeFileSync("/from-fn", name);
  }, { args: ["strata"] })
  .addLocalDir("./app", "/app", { copy: true, ignore: ["*.log"] })
  .workdir("/app")
  .cmd(["python3", "main.py"]);
