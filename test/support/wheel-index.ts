// Typed wrapper around scripts/serve-wheels.mjs (a plain-JS PEP 503 index
// serving fixtures/wheels/packages/). Tests compile to dist/test/support/, so
// the script and fixtures are located relative to this file at runtime.

import { fileURLToPath } from "node:url";

/** Repository root: dist/test/support/ -> ../../../ */
export const REPO_ROOT_URL: URL = new URL("../../../", import.meta.url);
export const REPO_ROOT: string = fileURLToPath(REPO_ROOT_URL);

/** Directory with the committed test wheels. */
export const WHEELS_DIR: string = fileURLToPath(new URL("fixtures/wheels/packages/", REPO_ROOT_URL));

/** The `uv` test double (POSIX sh, pip-backed). */
export const UV_DOUBLE_PATH: string = fileURLToPath(new URL("fixtures/uv-double/uv", REPO_ROOT_URL));

const SERVE_WHEELS_URL = new URL("scripts/serve-wheels.mjs", REPO_ROOT_URL);

export interface WheelIndexOptions {
  /** Interface to bind; default "127.0.0.1". */
  host?: string;
  /** Port; 0 (default) picks a free one. */
  port?: number;
  /** Directory of distribution files; default fixtures/wheels/packages. */
  dir?: string;
  /** Log each request to stderr. */
  verbose?: boolean;
}

export interface WheelIndex {
  /** e.g. "http://127.0.0.1:12345/simple" (no trailing slash). */
  url: string;
  host: string;
  port: number;
  close(): Promise<void>;
}

interface ServeWheelsModule {
  startWheelIndex(options?: WheelIndexOptions): Promise<WheelIndex>;
  normalizeName(name: string): string;
  DEFAULT_PACKAGES_DIR: string;
}

let modulePromise: Promise<ServeWheelsModule> | undefined;

function isServeWheelsModule(value: unknown): value is ServeWheelsModule {
  if (typeof value !== "object" || value === null) return false;
  const m = value as Record<string, unknown>;
  return typeof m["startWheelIndex"] === "function" && typeof m["normalizeName"] === "function";
}

function loadModule(): Promise<ServeWheelsModule> {
  modulePromise ??= (async () => {
    const mod: unknown = await import(SERVE_WHEELS_URL.href);
    if (!isServeWheelsModule(mod)) {
      throw new Error(`${SERVE_WHEELS_URL.href} does not export startWheelIndex/normalizeName`);
    }
    return mod;
  })();
  return modulePromise;
}

/** Starts the PEP 503 test index; resolves once it is listening. */
export async function startWheelIndex(options: WheelIndexOptions = {}): Promise<WheelIndex> {
  const mod = await loadModule();
  return mod.startWheelIndex({ host: "127.0.0.1", port: 0, ...options });
}
