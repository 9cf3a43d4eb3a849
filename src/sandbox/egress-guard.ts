/**
 * The host firewall rule that keeps sandboxed RUN steps off the host: slirp4netns (the user-mode network stack that
 * gives each step egress) runs with a dedicated group id, and an nftables table of Strata's own rejects every
 * connection that group opens to the host's own addresses (`fib daddr type local`: loopback and every address the
 * host holds), to broadcast/multicast, to link-local and cloud metadata addresses, and to any range the operator adds.
 * DNS to the host's own resolvers (from /etc/resolv.conf) stays allowed, so name lookups work.
 *
 * The rule set is one table (`inet strata_sandbox`), replaced atomically (one `nft -f` transaction), so concurrent
 * builders converge on the same rules and no other table is touched.
 */
import { promises as fsp } from "node:fs";
import { execa } from "execa";
import { SandboxError } from "../errors.js";

import { SLIRP_GID } from "./ids.js";

/** Addresses no step may reach besides the host's own: link-local (cloud metadata at 169.254.169.254), this-network. */
export const DEFAULT_DENY_V4 = [
  "0.0.0.0/8",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "100.100.100.200/32",
  "224.0.0.0/4",
  "255.255.255.255/32",
];
export const DEFAULT_DENY_V6 = ["::1/128", "fe80::/10", "fd00:ec2::254/128", "ff00::/8"];

export interface GuardOptions {
  gid: number;
  /** The host's DNS resolvers (from /etc/resolv.conf): port 53 to these stays open even when they are local. */
  resolvers: string[];
  /** Extra CIDRs the operator denies (STRATA_SANDBOX_DENY, comma-separated), e.g. the cluster's private range. */
  extraDeny: string[];
}

const V4 = /^(\d{1,3})(\.\d{1,3}){3}(\/\d{1,2})?$/;
const V6 = /^[0-9a-fA-F:]+(\/\d{1,3})?$/;

/** The nftables program for the guard (pure). Refuses anything that is not an IP address or CIDR. */
export function guardRules(o: GuardOptions): string {
  const v4: string[] = [...DEFAULT_DENY_V4];
  const v6: string[] = [...DEFAULT_DENY_V6];
  for (const c of o.extraDeny) {
    if (V4.test(c)) v4.push(c);
    else if (V6.test(c) && c.includes(":")) v6.push(c);
    else throw new SandboxError(`STRATA_SANDBOX_DENY: ${JSON.stringify(c)} is not an IPv4 or IPv6 address or CIDR`);
  }
  const dns4 = o.resolvers.filter((r) => V4.test(r));
  const dns6 = o.resolvers.filter((r) => V6.test(r) && r.includes(":"));
  const g = `meta skgid ${o.gid}`;
  const lines = [
    "table inet strata_sandbox",
    "delete table inet strata_sandbox",
    "table inet strata_sandbox {",
    "  chain egress {",
    "    type filter hook output priority 0; policy accept;",
    ...(dns4.length ? [`    ${g} ip daddr { ${dns4.join(", ")} } meta l4proto { tcp, udp } th dport 53 accept`] : []),
    ...(dns6.length ? [`    ${g} ip6 daddr { ${dns6.join(", ")} } meta l4proto { tcp, udp } th dport 53 accept`] : []),
    `    ${g} fib daddr type { local, broadcast, multicast, anycast } meta l4proto tcp reject with tcp reset`,
    `    ${g} fib daddr type { local, broadcast, multicast, anycast } reject`,
    `    ${g} ip daddr { ${v4.join(", ")} } meta l4proto tcp reject with tcp reset`,
    `    ${g} ip daddr { ${v4.join(", ")} } reject`,
    `    ${g} ip6 daddr { ${v6.join(", ")} } meta l4proto tcp reject with tcp reset`,
    `    ${g} ip6 daddr { ${v6.join(", ")} } reject`,
    "  }",
    "}",
  ];
  return lines.join("\n") + "\n";
}

/** Nameserver addresses of a resolv.conf (pure). */
export function resolversOf(resolvConf: string): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split("\n")) {
    const m = /^\s*nameserver\s+(\S+)/.exec(line);
    if (m) out.push(m[1]!.replace(/%.*$/, ""));
  }
  return out;
}

let installed: Promise<void> | undefined;

/** Installs (once per process) the guard table. Fails closed: without it no sandboxed network is handed out. */
export function ensureEgressGuard(gid = SLIRP_GID): Promise<void> {
  installed ??= (async () => {
    const resolvers = resolversOf(await fsp.readFile("/etc/resolv.conf", "utf8").catch(() => ""));
    const extraDeny = (process.env.STRATA_SANDBOX_DENY ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    const rules = guardRules({ gid, resolvers, extraDeny });
    const r = await execa("nft", ["-f", "-"], { input: rules, reject: false });
    if (r.exitCode !== 0) {
      throw new SandboxError(
        `could not install the sandbox network's firewall table (nft -f): ${(r.stderr || r.message || "").trim()}. ` +
          "Install nftables (`npm run setup`), or build with network none (`--network none`); the host network needs the network.host entitlement",
      );
    }
  })().catch((e) => {
    installed = undefined;
    throw e;
  });
  return installed;
}
