/**
 * smol-toml, loaded the first time a TOML file is read: importing it costs about 8 ms, which every command and build
 * would otherwise pay at start-up (registry configs and pyproject files are rare).
 */
import { createRequire } from "node:module";

type SmolToml = typeof import("smol-toml");
let loaded: SmolToml | undefined;

/** The TOML parser module (`parse`, `TomlError`). */
export function toml(): SmolToml {
  loaded ??= createRequire(import.meta.url)("smol-toml") as SmolToml;
  return loaded;
}
