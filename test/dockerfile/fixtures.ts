/** Locates and reads the ported tables in fixtures/dockerfile (works from test/ and from dist/test/). */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export function readFixture<T>(name: string): T {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = join(dir, "fixtures", "dockerfile", name);
    if (existsSync(candidate)) return JSON.parse(readFileSync(candidate, "utf8")) as T;
    const up = dirname(dir);
    if (up === dir) throw new Error(`fixtures/dockerfile/${name} not found above ${import.meta.url}`);
    dir = up;
  }
}
