// Recorded Debian package versions: reading dpkg's status and comparing it with a builder version's record (pure).
import assert from "node:assert/strict";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, test } from "node:test";
import { checkPins, pinModeFromEnv } from "../../src/engine/debian-base.js";
import { installedPackages, pinDrift } from "../../src/engine/debian-pins.js";
import { ConfigError, DebianArchiveDriftError } from "../../src/errors.js";

const STATUS = `Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u10
Description: GNU C Library: Shared libraries
 Contains the standard libraries.

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2025b-0+deb12u1

Package: old-conf
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: libfoo
Status: install ok installed
Architecture: i386
Version: 3.1
`;

describe("debian pins", () => {
  test("installedPackages lists installed packages only, sorted, foreign architectures qualified", () => {
    assert.deepEqual(installedPackages(STATUS), [
      ["libc6", "2.36-9+deb12u10"],
      ["libfoo:i386", "3.1"],
      ["tzdata", "2025b-0+deb12u1"],
    ]);
  });

  test("pinDrift names each changed or unrecorded package; recorded but absent ones are not drift", () => {
    const installed = installedPackages(STATUS);
    assert.deepEqual(pinDrift(installed, installed), []);
    assert.deepEqual(
      pinDrift(
        [
          ["libc6", "2.36-9+deb12u9"],
          ["tzdata", "2025b-0+deb12u1"],
          ["python3", "3.11.2-1+b1"],
        ],
        installed,
      ),
      ["libc6: 2.36-9+deb12u9 → 2.36-9+deb12u10", "libfoo:i386: not recorded → 3.1"],
    );
  });

  test("the drift error says what moved and what to do", () => {
    const e = new DebianArchiveDriftError("2026.12", "bookworm", ["libc6: a → b"]);
    assert.equal(e.code, "DEBIAN_ARCHIVE_DRIFT");
    assert.match(
      e.message,
      /debianSlim bookworm: the Debian archive no longer serves the package versions builder version 2026\.12 records \(libc6: a → b\)/,
    );
    assert.match(e.message, /newer builder version/);
  });

  test("checkPins reads a built root's dpkg status: a match passes, drift is a typed error, no pins is no check", async () => {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-pins-"));
    try {
      await fsp.mkdir(path.join(root, "var/lib/dpkg"), { recursive: true });
      await fsp.writeFile(path.join(root, "var/lib/dpkg/status"), STATUS);
      const spec = {
        kind: "debian" as const,
        python: "3.11",
        suite: "bookworm",
        mirror: "http://deb.debian.org/debian",
        variant: "minbase",
        packages: ["ca-certificates"],
        cmd: ["python3"],
      };
      await checkPins({ ...spec, pins: installedPackages(STATUS) }, root, "2026.12");
      await checkPins(spec, "/nonexistent", "2026.11");
      await assert.rejects(
        checkPins(
          {
            ...spec,
            pins: [
              ["libc6", "2.36-9+deb12u9"],
              ["libfoo:i386", "3.1"],
              ["tzdata", "2025b-0+deb12u1"],
            ],
          },
          root,
          "2026.12",
        ),
        (e: unknown) =>
          e instanceof DebianArchiveDriftError &&
          e.suite === "bookworm" &&
          e.changed.join() === "libc6: 2.36-9+deb12u9 → 2.36-9+deb12u10",
      );
      // STRATA_DEBIAN_PINS=warn: the same drift is a warning line, and the base goes on.
      const warned: string[] = [];
      await checkPins(
        { ...spec, pins: [["libc6", "2.36-9+deb12u9"]] },
        root,
        "2026.12",
        pinModeFromEnv({ STRATA_DEBIAN_PINS: "warn" }),
        (l) => warned.push(l),
      );
      assert.equal(warned.length, 1);
      assert.match(
        warned[0]!,
        /^warning \(STRATA_DEBIAN_PINS=warn\): debianSlim bookworm: .*libc6: 2\.36-9\+deb12u9 → /,
      );
    } finally {
      await fsp.rm(root, { recursive: true, force: true });
    }
  });

  test("STRATA_DEBIAN_PINS: error by default, warn when asked, anything else a ConfigError", () => {
    assert.equal(pinModeFromEnv({}), "error");
    assert.equal(pinModeFromEnv({ STRATA_DEBIAN_PINS: "error" }), "error");
    assert.equal(pinModeFromEnv({ STRATA_DEBIAN_PINS: " warn " }), "warn");
    assert.throws(
      () => pinModeFromEnv({ STRATA_DEBIAN_PINS: "off" }),
      (e: unknown) => e instanceof ConfigError && /"off"/.test(e.message),
    );
  });
});
