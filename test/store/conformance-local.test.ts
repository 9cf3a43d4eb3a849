import { after, before } from "node:test";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { LocalStore } from "../../src/store/local.js";
import { storeConformance } from "../support/store-conformance.js";

let work: string;
let n = 0;
before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-conformance-local-"));
});
after(async () => {
  await fsp.rm(work, { recursive: true, force: true });
});

storeConformance("LocalStore", () => LocalStore.open(path.join(work, `store-${++n}`)));
