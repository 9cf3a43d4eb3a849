/**
 * IP addresses as the fetch policy sees them (pure): parsing (IPv4 dotted quads, IPv6 with `::` and an embedded
 * IPv4 tail), CIDR ranges, and the class of an address — public, or the kind of special-purpose range it is in
 * (IANA's special-purpose registries), looking through IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms to the
 * IPv4 address they carry.
 */

/** An IPv4 (4 bytes) or IPv6 (16 bytes) address. */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
}

/** `address/prefix`: the addresses whose first `prefix` bits equal `address`'s. */
export interface Cidr {
  readonly address: IpAddress;
  readonly prefix: number;
}

/** The kinds of address the service refuses to fetch from by default; `public` is everything else. */
export type AddressKind =
  | "public"
  | "loopback"
  | "link-local"
  | "private"
  | "shared"
  | "unique-local"
  | "unspecified"
  | "multicast"
  | "broadcast"
  | "reserved";

/** How an IPv6 address carries an IPv4 one. */
export type Embedding = "IPv4-mapped" | "IPv4-compatible" | "NAT64" | "6to4";

export interface AddressClass {
  readonly kind: AddressKind;
  /** The special-purpose range the address is in (`127.0.0.0/8`), absent for public addresses. */
  readonly range?: string;
  /** Set when the class is that of an IPv4 address carried inside an IPv6 one. */
  readonly embedded?: { readonly via: Embedding; readonly ipv4: IpAddress };
}

/** Parses a dotted quad: four decimal parts 0-255 without leading zeros (the form URLs and resolvers produce). */
function parseV4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > 255) return undefined;
    out[i] = Number(p);
  }
  return out;
}

function parseV6(text: string): Uint8Array | undefined {
  let s = text;
  const lastColon = s.lastIndexOf(":");
  if (s.includes(".", lastColon)) {
    // An IPv4 tail (`::ffff:1.2.3.4`) is the last two groups written as a dotted quad.
    const v4 = parseV4(s.slice(lastColon + 1));
    if (!v4) return undefined;
    s = `${s.slice(0, lastColon + 1)}${((v4[0]! << 8) | v4[1]!).toString(16)}:${((v4[2]! << 8) | v4[3]!).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string): number[] | undefined => {
    if (h === "") return [];
    const out: number[] = [];
    for (const g of h.split(":")) {
      if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = groups(halves[0]!);
  const rest = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !rest) return undefined;
  const missing = 8 - head.length - rest.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const words = [...head, ...new Array<number>(missing).fill(0), ...rest];
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** Parses an IPv4 or IPv6 address (IPv6 optionally in brackets); undefined for anything else (names, zone ids). */
export function parseIp(text: string): IpAddress | undefined {
  const t = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  if (t.includes(":")) {
    const bytes = parseV6(t);
    return bytes ? { family: 6, bytes } : undefined;
  }
  const bytes = parseV4(t);
  return bytes ? { family: 4, bytes } : undefined;
}

/** The canonical text of an address: a dotted quad, or RFC 5952 IPv6 (lowercase, longest zero run as `::`). */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) return [...ip.bytes].join(".");
  const w = Array.from({ length: 8 }, (_, i) => (ip.bytes[2 * i]! << 8) | ip.bytes[2 * i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(":");
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

/** Parses `address/prefix` (the address's host bits must be zero), or a bare address as a one-address range. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf("/");
  const address = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (!address) return undefined;
  const max = address.family === 4 ? 32 : 128;
  if (slash < 0) return { address, prefix: max };
  const p = text.slice(slash + 1);
  if (!/^(0|[1-9]\d{0,2})$/.test(p) || Number(p) > max) return undefined;
  const cidr = { address, prefix: Number(p) };
  const masked = maskTo(address, cidr.prefix);
  return masked.bytes.every((b, i) => b === address.bytes[i]) ? cidr : undefined;
}

function maskTo(ip: IpAddress, prefix: number): IpAddress {
  const bytes = new Uint8Array(ip.bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - 8 * i));
    bytes[i] = ip.bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return { family: ip.family, bytes };
}

/** True when `ip` is in `cidr` (same family only: callers unwrap IPv4-mapped addresses first, see `canonicalIp`). */
export function cidrContains(cidr: Cidr, ip: IpAddress): boolean {
  if (cidr.address.family !== ip.family) return false;
  const m = maskTo(ip, cidr.prefix);
  return m.bytes.every((b, i) => b === cidr.address.bytes[i]);
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c.address)}/${c.prefix}`;
}

/** An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it is; any other address as it is. */
export function canonicalIp(ip: IpAddress): IpAddress {
  const e = embeddedIpv4(ip);
  return e?.via === "IPv4-mapped" ? e.ipv4 : ip;
}

const cidr = (text: string): Cidr => {
  const c = parseCidr(text);
  if (!c) throw new Error(`bad built-in range ${text}`);
  return c;
};

/** IPv4 special-purpose ranges, most specific first (RFC 6890 and the IANA registry). */
const V4_RANGES: readonly [Cidr, AddressKind][] = [
  [cidr("255.255.255.255/32"), "broadcast"],
  [cidr("0.0.0.0/8"), "unspecified"],
  [cidr("10.0.0.0/8"), "private"],
  [cidr("100.64.0.0/10"), "shared"],
  [cidr("127.0.0.0/8"), "loopback"],
  [cidr("169.254.0.0/16"), "link-local"],
  [cidr("172.16.0.0/12"), "private"],
  [cidr("192.0.0.0/24"), "reserved"],
  [cidr("192.0.2.0/24"), "reserved"],
  [cidr("192.88.99.0/24"), "reserved"],
  [cidr("192.168.0.0/16"), "private"],
  [cidr("198.18.0.0/15"), "reserved"],
  [cidr("198.51.100.0/24"), "reserved"],
  [cidr("203.0.113.0/24"), "reserved"],
  [cidr("224.0.0.0/4"), "multicast"],
  [cidr("240.0.0.0/4"), "reserved"],
];

/** IPv6 ranges that are special by themselves (the IPv4-carrying forms are handled before these). */
const V6_RANGES: readonly [Cidr, AddressKind][] = [
  [cidr("::/128"), "unspecified"],
  [cidr("::1/128"), "loopback"],
  [cidr("64:ff9b:1::/48"), "private"], // NAT64 for local use (RFC 8215): translates to the operator's own networks
  [cidr("100::/64"), "reserved"], // discard-only
  [cidr("2001::/23"), "reserved"], // IETF protocol assignments, Teredo (2001::/32) included
  [cidr("2001:db8::/32"), "reserved"], // documentation
  [cidr("fc00::/7"), "unique-local"],
  [cidr("fe80::/10"), "link-local"],
  [cidr("fec0::/10"), "private"], // site-local (deprecated)
  [cidr("ff00::/8"), "multicast"],
];

const IPV4_MAPPED = cidr("::ffff:0:0/96");
const IPV4_COMPATIBLE = cidr("::/96");
const NAT64 = cidr("64:ff9b::/96");
const SIX_TO_FOUR = cidr("2002::/16");
const GLOBAL_UNICAST = cidr("2000::/3");

/** The IPv4 address an IPv6 address carries (mapped, compatible, NAT64 well-known prefix, 6to4), if any. */
export function embeddedIpv4(ip: IpAddress): { via: Embedding; ipv4: IpAddress } | undefined {
  if (ip.family !== 6) return undefined;
  const v4 = (at: number): IpAddress => ({ family: 4, bytes: ip.bytes.slice(at, at + 4) });
  if (cidrContains(IPV4_MAPPED, ip)) return { via: "IPv4-mapped", ipv4: v4(12) };
  if (cidrContains(NAT64, ip)) return { via: "NAT64", ipv4: v4(12) };
  if (cidrContains(SIX_TO_FOUR, ip)) return { via: "6to4", ipv4: v4(2) };
  // `::` and `::1` are IPv6's own unspecified and loopback addresses, not IPv4-compatible forms.
  if (cidrContains(IPV4_COMPATIBLE, ip) && ip.bytes.slice(12).some((b, i) => (i < 3 ? b !== 0 : b > 1)))
    return { via: "IPv4-compatible", ipv4: v4(12) };
  return undefined;
}

function classifyV4(ip: IpAddress): AddressClass {
  for (const [range, kind] of V4_RANGES) if (cidrContains(range, ip)) return { kind, range: formatCidr(range) };
  return { kind: "public" };
}

/**
 * The class of an address. An IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
 * `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) has the class of that IPv4 address, with `embedded` set; IPv6
 * outside global unicast (`2000::/3`) and the ranges above is `reserved`.
 */
export function classifyAddress(ip: IpAddress): AddressClass {
  if (ip.family === 4) return classifyV4(ip);
  const e = embeddedIpv4(ip);
  if (e) {
    const c = classifyV4(e.ipv4);
    return { ...c, embedded: e };
  }
  for (const [range, kind] of V6_RANGES) if (cidrContains(range, ip)) return { kind, range: formatCidr(range) };
  if (!cidrContains(GLOBAL_UNICAST, ip)) return { kind: "reserved", range: "outside 2000::/3" };
  return { kind: "public" };
}

const KIND_WORDS: Record<Exclude<AddressKind, "public">, string> = {
  loopback: "a loopback address",
  "link-local": "a link-local address",
  private: "a private-network address",
  shared: "a carrier-grade NAT (shared) address",
  "unique-local": "a unique-local address",
  unspecified: "an unspecified address",
  multicast: "a multicast address",
  broadcast: "the broadcast address",
  reserved: "a reserved address",
};

/** `127.0.0.1 is a loopback address (127.0.0.0/8)`; for embedded forms, names the IPv4 address carried. */
export function describeAddress(ip: IpAddress, c: AddressClass = classifyAddress(ip)): string {
  if (c.kind === "public") return `${formatIp(ip)} is a public address`;
  const what = `${KIND_WORDS[c.kind]}${c.range ? ` (${c.range})` : ""}`;
  if (c.embedded) return `${formatIp(ip)} is the ${c.embedded.via} form of ${formatIp(c.embedded.ipv4)}, ${what}`;
  return `${formatIp(ip)} is ${what}`;
}
