/**
 * Where a registry's pulls go (pure): the mirrors the registry configuration lists for it, in order, then the registry
 * itself; and how each is spoken to (plain HTTP or HTTPS, a path below `/v2`). BuildKit's rules: a host's `http`
 * comes from its own `[registry."<host>"]` section, and loopback hosts speak plain HTTP unless it says `http = false`.
 */
import type { RegistryConfig } from "../net/registry-config.js";
import { isInsecureHost, registryApiHost } from "./reference.js";

/** One host a registry's requests may go to. */
export interface RegistryEndpoint {
  /** `host[:port]` the requests go to (`registry-1.docker.io` for Docker Hub itself). */
  readonly host: string;
  /** Path below `/v2` (`""`, or a mirror's `/prefix`). */
  readonly path: string;
  /** Plain HTTP. */
  readonly http: boolean;
  /** A mirror of the registry (true), or the registry itself. */
  readonly mirror: boolean;
  /** How messages name it: `mirror 127.0.0.5:5000`, `docker.io`. */
  readonly label: string;
}

/** Whether `host` speaks plain HTTP: its section's `http`, else loopback and STRATA_INSECURE_REGISTRIES hosts do. */
function plainHttp(host: string, config: RegistryConfig): boolean {
  return config.registries.get(host.toLowerCase())?.http ?? isInsecureHost(host);
}

/** The registry itself, spoken to as its section (if any) says. */
export function originEndpoint(registry: string, config: RegistryConfig): RegistryEndpoint {
  const host = registryApiHost(registry);
  return { host, path: "", http: plainHttp(registry, config), mirror: false, label: registry };
}

/** The hosts a pull of an image of `registry` tries, in order: its mirrors, then the registry itself. */
export function registryEndpoints(registry: string, config: RegistryConfig): RegistryEndpoint[] {
  const mirrors = config.registries.get(registry.toLowerCase())?.mirrors ?? [];
  return [
    ...mirrors.map(
      (m): RegistryEndpoint => ({
        host: m.host,
        path: m.path,
        http: m.scheme !== undefined ? m.scheme === "http" : plainHttp(m.host, config),
        mirror: true,
        label: `mirror ${m.host}${m.path}`,
      }),
    ),
    originEndpoint(registry, config),
  ];
}
