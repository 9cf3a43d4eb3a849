// Address classification for the fetch policy: every special-purpose range at its boundaries, the IPv6 forms that
// carry an IPv4 address (mapped, compatible, NAT64, 6to4), parsing and canonical text.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  canonicalIp,
  cidrContains,
  classifyAddress,
  describeAddress,
  embeddedIpv4,
  formatIp,
  parseCidr,
  parseIp,
  type AddressKind,
} from "../../src/net/ip-address.js";

function kind(text: string): AddressKind {
  const ip = parseIp(text);
  assert.ok(ip, `${text} parses`);
  return classifyAddress(ip).kind;
}

/** [address, kind]: the first and last address of every range, and the neighbours just outside. */
const V4: [string, AddressKind][] = [
  ["0.0.0.0", "unspecified"],
  ["0.255.255.255", "unspecified"],
  ["1.0.0.0", "public"],
  ["9.255.255.255", "public"],
  ["10.0.0.0", "private"],
  ["10.255.255.255", "private"],
  ["11.0.0.0", "public"],
  ["100.63.255.255", "public"],
  ["100.64.0.0", "shared"],
  ["100.127.255.255", "shared"],
  ["100.128.0.0", "public"],
  ["126.255.255.255", "public"],
  ["127.0.0.0", "loopback"],
  ["127.0.0.1", "loopback"],
  ["127.255.255.255", "loopback"],
  ["128.0.0.0", "public"],
  ["169.253.255.255", "public"],
  ["169.254.0.0", "link-local"],
  ["169.254.169.254", "link-local"],
  ["169.254.255.255", "link-local"],
  ["169.255.0.0", "public"],
  ["172.15.255.255", "public"],
  ["172.16.0.0", "private"],
  ["172.31.255.255", "private"],
  ["172.32.0.0", "public"],
  ["192.0.0.0", "reserved"],
  ["192.0.0.255", "reserved"],
  ["192.0.1.0", "public"],
  ["192.0.2.0", "reserved"],
  ["192.0.2.255", "reserved"],
  ["192.88.99.1", "reserved"],
  ["192.167.255.255", "public"],
  ["192.168.0.0", "private"],
  ["192.168.255.255", "private"],
  ["192.169.0.0", "public"],
  ["198.17.255.255", "public"],
  ["198.18.0.0", "reserved"],
  ["198.19.255.255", "reserved"],
  ["198.20.0.0", "public"],
  ["198.51.100.7", "reserved"],
  ["203.0.113.9", "reserved"],
  ["223.255.255.255", "public"],
  ["224.0.0.0", "multicast"],
  ["239.255.255.255", "multicast"],
  ["240.0.0.0", "reserved"],
  ["255.255.255.254", "reserved"],
  ["255.255.255.255", "broadcast"],
  ["8.8.8.8", "public"],
];

const V6: [string, AddressKind][] = [
  ["::", "unspecified"],
  ["::1", "loopback"],
  ["::2", "unspecified"], // IPv4-compatible ::0.0.0.2, in 0.0.0.0/8
  ["fe80::", "link-local"],
  ["fe80::1", "link-local"],
  ["febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"],
  ["fec0::1", "private"],
  ["fc00::", "unique-local"],
  ["fcff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"],
  ["fd12:3456::1", "unique-local"],
  ["fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique-local"],
  ["fe00::", "reserved"], // outside 2000::/3
  ["fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
  ["ff00::", "multicast"],
  ["ff02::1", "multicast"],
  ["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"],
  ["100::1", "reserved"],
  ["2001:db8::1", "reserved"],
  ["2001::1", "reserved"], // Teredo
  ["64:ff9b:1::1", "private"],
  ["2000::", "public"],
  ["2606:4700:4700::1111", "public"],
  ["3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "public"],
  ["4000::", "reserved"],
  ["1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "reserved"],
];

/** IPv6 forms that carry an IPv4 address classify as that address. */
const EMBEDDED: [string, AddressKind, string, string][] = [
  ["::ffff:127.0.0.1", "loopback", "IPv4-mapped", "127.0.0.1"],
  ["::ffff:7f00:1", "loopback", "IPv4-mapped", "127.0.0.1"],
  ["::FFFF:7F00:0001", "loopback", "IPv4-mapped", "127.0.0.1"],
  ["0:0:0:0:0:ffff:127.0.0.1", "loopback", "IPv4-mapped", "127.0.0.1"],
  ["::ffff:169.254.169.254", "link-local", "IPv4-mapped", "169.254.169.254"],
  ["::ffff:10.1.2.3", "private", "IPv4-mapped", "10.1.2.3"],
  ["::ffff:100.64.0.1", "shared", "IPv4-mapped", "100.64.0.1"],
  ["::ffff:0.0.0.0", "unspecified", "IPv4-mapped", "0.0.0.0"],
  ["::ffff:224.0.0.1", "multicast", "IPv4-mapped", "224.0.0.1"],
  ["::ffff:8.8.8.8", "public", "IPv4-mapped", "8.8.8.8"],
  ["64:ff9b::127.0.0.1", "loopback", "NAT64", "127.0.0.1"],
  ["64:ff9b::a9fe:a9fe", "link-local", "NAT64", "169.254.169.254"],
  ["64:ff9b::192.168.1.1", "private", "NAT64", "192.168.1.1"],
  ["64:ff9b::8.8.8.8", "public", "NAT64", "8.8.8.8"],
  ["::127.0.0.1", "loopback", "IPv4-compatible", "127.0.0.1"],
  ["::10.0.0.1", "private", "IPv4-compatible", "10.0.0.1"],
  ["2002:7f00:1::", "loopback", "6to4", "127.0.0.1"],
  ["2002:c0a8:101::1", "private", "6to4", "192.168.1.1"],
  ["2002:808:808::1", "public", "6to4", "8.8.8.8"],
];

describe("classifyAddress", () => {
  test("IPv4: every special-purpose range at both ends, and the addresses just outside", () => {
    for (const [a, k] of V4) assert.equal(kind(a), k, a);
  });
  test("IPv6: loopback, unspecified, link-local, site-local, unique-local, multicast, reserved, global", () => {
    for (const [a, k] of V6) assert.equal(kind(a), k, a);
  });
  test("IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses have the class of the IPv4 address they carry", () => {
    for (const [a, k, via, v4] of EMBEDDED) {
      const ip = parseIp(a)!;
      const c = classifyAddress(ip);
      assert.equal(c.kind, k, a);
      assert.equal(c.embedded?.via, via, a);
      assert.equal(formatIp(c.embedded!.ipv4), v4, a);
    }
    assert.equal(embeddedIpv4(parseIp("::1")!), undefined, "::1 is IPv6's loopback, not ::0.0.0.1");
    assert.equal(embeddedIpv4(parseIp("::")!), undefined);
  });
  test("descriptions name the address, its kind and range, and the IPv4 address an IPv6 form carries", () => {
    assert.equal(describeAddress(parseIp("127.0.0.1")!), "127.0.0.1 is a loopback address (127.0.0.0/8)");
    assert.equal(
      describeAddress(parseIp("::ffff:169.254.169.254")!),
      "::ffff:a9fe:a9fe is the IPv4-mapped form of 169.254.169.254, a link-local address (169.254.0.0/16)",
    );
    assert.equal(describeAddress(parseIp("fd00::1")!), "fd00::1 is a unique-local address (fc00::/7)");
  });
});

describe("parseIp", () => {
  test("accepts dotted quads and IPv6 in every shorthand; brackets are optional", () => {
    assert.equal(formatIp(parseIp("192.168.0.1")!), "192.168.0.1");
    assert.equal(formatIp(parseIp("[::1]")!), "::1");
    assert.equal(formatIp(parseIp("2001:0db8:0000:0000:0000:0000:0000:0001")!), "2001:db8::1");
    assert.equal(formatIp(parseIp("1:0:0:2:0:0:0:3")!), "1:0:0:2::3");
    assert.equal(formatIp(parseIp("1:2:3:4:5:6:7:8")!), "1:2:3:4:5:6:7:8");
    assert.equal(formatIp(parseIp("::ffff:1.2.3.4")!), "::ffff:102:304");
    assert.equal(formatIp(parseIp("1::")!), "1::");
  });
  test("refuses what is not one address: names, octal or hex parts, short forms, zone ids, too many groups", () => {
    for (const bad of [
      "localhost",
      "127.1",
      "0x7f.0.0.1",
      "0177.0.0.1",
      "2130706433",
      "127.0.0.256",
      "127.0.0.1.",
      "1.2.3",
      "1:2:3:4:5:6:7:8:9",
      "1::2::3",
      "1:2:3:4:5:6:7",
      "::ffff:1.2.3",
      "::ffff:1.2.3.4:5",
      "fe80::1%eth0",
      "12345::",
      "",
    ])
      assert.equal(parseIp(bad), undefined, bad);
  });
});

describe("CIDR ranges", () => {
  test("contain the addresses under the prefix, across the boundary exactly", () => {
    const c = parseCidr("10.1.0.0/16")!;
    assert.ok(cidrContains(c, parseIp("10.1.0.0")!));
    assert.ok(cidrContains(c, parseIp("10.1.255.255")!));
    assert.ok(!cidrContains(c, parseIp("10.2.0.0")!));
    assert.ok(!cidrContains(c, parseIp("10.0.255.255")!));
    const odd = parseCidr("172.16.0.0/12")!;
    assert.ok(cidrContains(odd, parseIp("172.31.255.255")!));
    assert.ok(!cidrContains(odd, parseIp("172.32.0.0")!));
    const v6 = parseCidr("fd00::/8")!;
    assert.ok(cidrContains(v6, parseIp("fdff::1")!));
    assert.ok(!cidrContains(v6, parseIp("fc00::1")!));
    assert.ok(cidrContains(parseCidr("0.0.0.0/0")!, parseIp("8.8.8.8")!));
    assert.ok(!cidrContains(parseCidr("0.0.0.0/0")!, parseIp("::1")!), "families never mix");
  });
  test("a bare address is a one-address range; host bits set or a prefix too long is refused", () => {
    assert.equal(parseCidr("127.0.0.1")!.prefix, 32);
    assert.equal(parseCidr("::1")!.prefix, 128);
    assert.equal(parseCidr("10.0.0.1/8"), undefined);
    assert.equal(parseCidr("10.0.0.0/33"), undefined);
    assert.equal(parseCidr("::/129"), undefined);
    assert.equal(parseCidr("10.0.0.0/08"), undefined);
  });
  test("canonicalIp unwraps IPv4-mapped addresses only", () => {
    assert.equal(formatIp(canonicalIp(parseIp("::ffff:127.0.0.1")!)), "127.0.0.1");
    assert.equal(formatIp(canonicalIp(parseIp("64:ff9b::7f00:1")!)), "64:ff9b::7f00:1");
  });
});
