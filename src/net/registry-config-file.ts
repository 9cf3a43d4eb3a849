/**
 * Reads a registry configuration file (the shell around `registry-config.ts`): the TOML text, then every CA file it
 * names, so a missing or malformed file fails when the configuration is loaded, naming the file and the key, not at
 * the first pull.
 */
import { readFileSync } from "node:fs";
import { RegistryConfigError } from "../errors.js";
import { NO_REGISTRY_CONFIG, parseRegistryConfig, type RegistryConfig } from "./registry-config.js";

function readText(file: string, what: string, configFile: string, key?: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new RegistryConfigError(`${what} ${file} cannot be read (${code})`, configFile, key, { cause: e });
  }
}

/** Loads `file` (TOML, buildkitd.toml's `[registry."<host>"]` sections) with the contents of its CA files. */
export function loadRegistryConfig(file: string): RegistryConfig {
  const config = parseRegistryConfig(readText(file, "the registry config", file), file);
  const caPems = new Map<string, string[]>();
  for (const [host, settings] of config.registries) {
    settings.ca.forEach((caFile, i) => {
      const key = `registry.${JSON.stringify(host)}.ca[${i}]`;
      const pem = readText(caFile, `${file}: ${key}: the CA file`, file, key);
      if (!pem.includes("-----BEGIN CERTIFICATE-----"))
        throw new RegistryConfigError(
          `${file}: ${key}: ${caFile} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`,
          file,
          key,
        );
      caPems.set(host, [...(caPems.get(host) ?? []), pem]);
    });
  }
  return { ...config, caPems };
}

/** The configuration `STRATA_REGISTRY_CONFIG` names, or none. */
export function registryConfigFromEnv(env: NodeJS.ProcessEnv = process.env): RegistryConfig {
  const file = env["STRATA_REGISTRY_CONFIG"]?.trim();
  return file ? loadRegistryConfig(file) : NO_REGISTRY_CONFIG;
}
