/**
 * Recorded Debian package versions (a builder version's `debian.pins`), pure: reading a root filesystem's dpkg status
 * and comparing what is installed with what the builder version records.
 */

/** The installed packages of a dpkg status file (`var/lib/dpkg/status`): name → version, sorted by name. */
export function installedPackages(status: string): [string, string][] {
  const out = new Map<string, string>();
  for (const stanza of status.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split("\n")) {
      const m = /^([A-Za-z0-9-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1]!, m[2]!.trim());
    }
    const name = fields.get("Package");
    const version = fields.get("Version");
    // Only what is really there: "install ok installed" (not config-files, half-installed or deinstall).
    if (
      !name ||
      !version ||
      !/\binstalled$/.test(fields.get("Status") ?? "") ||
      /not-installed/.test(fields.get("Status") ?? "")
    )
      continue;
    const arch = fields.get("Architecture");
    // A foreign-architecture package is named with its architecture, as dpkg-query shows it.
    const key = arch && arch !== "all" && arch !== "amd64" ? `${name}:${arch}` : name;
    out.set(key, version);
  }
  return [...out].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * How an installed set differs from the recorded one: each installed package that is not recorded, or has another
 * version (`name: recorded → installed`). Recorded packages that are not installed are not drift: the record of a
 * suite serves every package set built from it (with or without Debian's Python).
 */
export function pinDrift(recorded: readonly [string, string][], installed: readonly [string, string][]): string[] {
  const want = new Map(recorded);
  const out: string[] = [];
  for (const [name, version] of installed) {
    const pinned = want.get(name);
    if (pinned === undefined) out.push(`${name}: not recorded → ${version}`);
    else if (pinned !== version) out.push(`${name}: ${pinned} → ${version}`);
  }
  return out;
}
