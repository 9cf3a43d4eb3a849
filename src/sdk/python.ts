/**
 * `addPython`: a standalone CPython (astral-sh/python-build-standalone, `x86_64_v3-unknown-linux-gnu-install_only`)
 * on a base that lacks Python, laid out as Modal's builder does it:
 *
 *   COPY /python/. /usr/local                               (the build's `python/` tree)
 *   ln -s /usr/local/bin/python3 /usr/local/bin/python      (only for Python < 3.13)
 *   ENV TERMINFO_DIRS=/etc/terminfo:/lib/terminfo:/usr/share/terminfo:/usr/lib/terminfo
 *
 * each its own cached step, right after the base (before `setupDockerfileCommands`). Nothing here is special to the
 * engine; it is the plan of this multi-stage Dockerfile:
 *
 *   FROM scratch AS python-build-standalone
 *   ADD --chown=0:0 --unpack=true <release URL, or the local tarball> /
 *   FROM scratch AS python-symlink
 *   ADD python-symlink.tar /                                 (builders/python-standalone/: bin/python -> /usr/local/bin/python3)
 *   FROM <base>
 *   COPY --from=python-build-standalone /python/. /usr/local
 *   COPY --from=python-symlink /bin/. /usr/local/bin/
 *   ENV TERMINFO_DIRS=…
 *
 * The base's steps read the stages through `select` inputs, so their keys cover the extracted files' names, modes,
 * owners and content digests — the tarball's content, never its path, name or mtime (the same tarball from GitHub, a
 * mirror or a local file gives the same keys). The symlink is copied, so no shell is needed in the base.
 *
 * Where the tarball comes from (decided when the plan is made):
 * - `STRATA_PYTHON_STANDALONE=<file>`: that tarball (for every series, unless its name says another one), or
 *   `=<directory>`: the release's own file name in it (`cpython-3.11.5+20230826-…-install_only.tar.gz`);
 * - else the release URL from the builder version (`builders/<version>.json`, `pythonStandalone.releases`), with its
 *   host and path prefix replaced by `STRATA_PYTHON_STANDALONE_MIRROR` when that is set. A release's `sha256`, when
 *   the table has one, is checked (`ADD --checksum`); without one, the downloaded content's digest is what the keys
 *   cover, as always.
 */
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { packageRoot, type BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError, LocalPathError } from "../errors.js";
import type { Instruction } from "../plan/instructions.js";
import type { Plan, Step, StepInput } from "../plan/step.js";

export const PYTHON_STANDALONE_ENV = "STRATA_PYTHON_STANDALONE";
export const PYTHON_STANDALONE_MIRROR_ENV = "STRATA_PYTHON_STANDALONE_MIRROR";
/** The stage names the COPY instructions render (`COPY --from=…`); they are part of the keys. */
export const PYTHON_STAGE = "python-build-standalone";
export const SYMLINK_STAGE = "python-symlink";
/** The committed tar holding `bin/python -> /usr/local/bin/python3` (a directory entry and a symlink, both root's). */
export const SYMLINK_TAR = "python-symlink.tar";

/** One pinned release in a builder version's `pythonStandalone.releases` (keyed by series, e.g. "3.11"). */
export interface PythonStandaloneRelease {
  /** Full CPython version, e.g. "3.11.5". */
  version: string;
  /** python-build-standalone release tag, e.g. "20230826". */
  release: string;
  /** Where the `x86_64_v3-unknown-linux-gnu-install_only` tarball is published. */
  url: string;
  /** Hex sha256 of the tarball, when known: then the download is verified (and a cached copy needs no request). */
  sha256?: string;
}

/** A builder version's `pythonStandalone` section (optional: versions without it support no addPython). */
export interface PythonStandaloneTable {
  source: string;
  releases: Record<string, PythonStandaloneRelease>;
}

/** The builder version's python-build-standalone table, if it has one. */
export function pythonStandaloneTable(b: BuilderVersion): PythonStandaloneTable | undefined {
  return (b as BuilderVersion & { pythonStandalone?: PythonStandaloneTable }).pythonStandalone;
}

/** Checks the shape of an `addPython` value when the image is defined: `X.Y` only, as Modal accepts. */
export function checkPythonSeries(method: string, series: unknown): string {
  if (typeof series !== "string" || !/^\d+\.\d+$/.test(series)) {
    const patch = typeof series === "string" && /^\d+\.\d+\.\d+/.test(series);
    throw new InvalidDefinitionError(
      `${method}: addPython must be a Python series "X.Y" such as "3.11"${patch ? `, not a patch version (${series}): the builder version pins the patch release` : `, got ${JSON.stringify(series)}`}`,
    );
  }
  return series;
}

/** The release a builder version pins for a series, or a clear error naming the supported series. */
export function pythonStandaloneRelease(b: BuilderVersion, method: string, series: string): PythonStandaloneRelease {
  const table = pythonStandaloneTable(b)?.releases ?? {};
  const release = table[series];
  if (!release) {
    const supported = Object.keys(table);
    throw new InvalidDefinitionError(
      `${method}: addPython ${series} is not supported by builder version ${b.version}; ` +
        (supported.length
          ? `supported: ${supported.join(", ")}`
          : "it has no python-build-standalone releases (try STRATA_BUILDER_VERSION=PREVIEW)"),
    );
  }
  return release;
}

/** The release's file name (the URL's last segment). */
export function releaseFileName(release: PythonStandaloneRelease): string {
  return decodeURIComponent(new URL(release.url).pathname.split("/").pop() ?? "");
}

/** The download URL: the table's, or the same `<release>/<file>` under STRATA_PYTHON_STANDALONE_MIRROR. */
export function releaseUrl(release: PythonStandaloneRelease, env: NodeJS.ProcessEnv = process.env): string {
  const mirror = env[PYTHON_STANDALONE_MIRROR_ENV]?.trim();
  if (!mirror) return release.url;
  return `${mirror.replace(/\/+$/, "")}/${release.release}/${new URL(release.url).pathname.split("/").pop()}`;
}

/** What to tell a user whose build cannot get the tarball. */
export function unavailableHelp(series: string, release: PythonStandaloneRelease): string {
  return (
    `addPython ${series} needs the python-build-standalone build ${releaseFileName(release)} (CPython ${release.version}, release ${release.release}). ` +
    `Download it on a machine that can reach it and set ${PYTHON_STANDALONE_ENV} to the file (or to a directory holding it), ` +
    `or set ${PYTHON_STANDALONE_MIRROR_ENV} to a mirror of https://github.com/astral-sh/python-build-standalone/releases/download.`
  );
}

/** Escapes a file name for a select pattern (Go `filepath.Match` metacharacters). */
function literal(name: string): string {
  return name.replace(/[*?[\\]/g, "\\$&");
}

/** A local tarball named by STRATA_PYTHON_STANDALONE for this release, or undefined when the variable is unset. */
export function localTarball(
  method: string,
  series: string,
  release: PythonStandaloneRelease,
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  const configured = env[PYTHON_STANDALONE_ENV]?.trim();
  if (!configured) return undefined;
  const abs = path.resolve(configured);
  const st = existsSync(abs) ? statSync(abs) : undefined;
  if (!st)
    throw new LocalPathError(
      abs,
      `${method}: ${PYTHON_STANDALONE_ENV}=${configured} does not exist; it must name a python-build-standalone install_only tarball or a directory of them`,
    );
  if (st.isDirectory()) {
    const file = path.join(abs, releaseFileName(release));
    if (!existsSync(file)) {
      throw new LocalPathError(
        file,
        `${method}: addPython ${series}: ${PYTHON_STANDALONE_ENV} is the directory ${abs}, which has no ${releaseFileName(release)}. ${unavailableHelp(series, release)}`,
      );
    }
    return file;
  }
  // A file whose name says it is another series is a mistake, not a substitute.
  const named = /^cpython-(\d+\.\d+)\./.exec(path.basename(abs));
  if (named && named[1] !== series) {
    throw new InvalidDefinitionError(
      `${method}: addPython ${series}, but ${PYTHON_STANDALONE_ENV}=${configured} is a build of Python ${named[1]}`,
    );
  }
  return abs;
}

function step(
  method: string,
  description: string,
  instructions: Instruction[],
  inputs: StepInput[],
  extra: Partial<Step> = {},
): Step {
  return { method, description, instructions, inputs, secrets: [], env: {}, forceBuild: false, extra: [], ...extra };
}

/** A one-step chain: an empty image plus one ADD of an archive into `/`. */
function unpackStage(b: BuilderVersion, method: string, what: string, add: Instruction, input: StepInput): Plan {
  return {
    builderVersion: b.version,
    steps: [
      step(method, `${what}: fromScratch`, [], [], { base: { kind: "scratch" } }),
      step(method, `${what}: unpack ${add.op === "ADD" ? add.sources?.[0] : ""}`, [add], [input]),
    ],
    deferred: [],
  };
}

/** The stage holding the release's `python/` tree (owned by root). */
export function pythonStagePlan(
  b: BuilderVersion,
  method: string,
  series: string,
  env: NodeJS.ProcessEnv = process.env,
): { plan: Plan; source: string } {
  const release = pythonStandaloneRelease(b, method, series);
  const local = localTarball(method, series, release, env);
  const what = `addPython ${series}`;
  if (local) {
    const name = path.basename(local);
    const add: Instruction = { op: "ADD", source: "tarball", dest: "/", sources: [name], chown: "0:0", unpack: true };
    const input: StepInput = {
      kind: "select",
      name: "tarball",
      root: { kind: "context", localPath: path.dirname(local), ignore: [] },
      patterns: [literal(name)],
    };
    return { plan: unpackStage(b, method, what, add, input), source: local };
  }
  const url = releaseUrl(release, env);
  const checksum = release.sha256 ? `sha256:${release.sha256}` : undefined;
  const add: Instruction = {
    op: "ADD",
    source: "tarball",
    dest: "/",
    sources: [url],
    chown: "0:0",
    unpack: true,
    ...(checksum ? { checksum } : {}),
  };
  const input: StepInput = {
    kind: "url",
    name: "tarball",
    url,
    ...(checksum ? { checksum } : {}),
    help: unavailableHelp(series, release),
  };
  return { plan: unpackStage(b, method, what, add, input), source: url };
}

/** The stage holding `bin/python -> /usr/local/bin/python3`, from the tar committed in `builders/python-standalone/`. */
export function symlinkStagePlan(b: BuilderVersion, method: string): Plan {
  const dir = path.join(packageRoot(), "builders", "python-standalone");
  const add: Instruction = { op: "ADD", source: "links", dest: "/", sources: [SYMLINK_TAR] };
  const input: StepInput = {
    kind: "select",
    name: "links",
    root: { kind: "context", localPath: dir, ignore: [] },
    patterns: [SYMLINK_TAR],
  };
  return unpackStage(b, method, "addPython python symlink", add, input);
}

/** TERMINFO_DIRS as Modal sets it (the standalone build's curses has no compiled-in terminfo path of the base's). */
export const TERMINFO_DIRS = "/etc/terminfo:/lib/terminfo:/usr/share/terminfo:/usr/lib/terminfo";

/** Whether a series gets `/usr/local/bin/python -> python3` (Modal adds it below 3.13). */
export function needsPythonSymlink(series: string): boolean {
  const [major, minor] = series.split(".").map(Number) as [number, number];
  return major < 3 || (major === 3 && minor < 13);
}

/**
 * The steps `addPython` appends after a base, in Modal's order, each its own cached step: one factory per step (their
 * number depends on the series only), each compiling for a builder version. STRATA_PYTHON_STANDALONE(_MIRROR) are
 * read when the plan is made.
 */
export function addPythonSteps(method: string, series: string): ((b: BuilderVersion) => Step)[] {
  checkPythonSeries(method, series);
  const steps: ((b: BuilderVersion) => Step)[] = [
    (b) => {
      const release = pythonStandaloneRelease(b, method, series);
      const { plan, source } = pythonStagePlan(b, method, series);
      return step(
        "addPython",
        `addPython ${series}: CPython ${release.version}+${release.release} → /usr/local (from ${source})`,
        [{ op: "COPY", source: "python", dest: "/usr/local", sources: ["/python/."], from: PYTHON_STAGE }],
        [
          {
            kind: "select",
            name: "python",
            root: { kind: "stage", stage: PYTHON_STAGE, plan },
            patterns: ["/python/."],
          },
        ],
      );
    },
  ];
  if (needsPythonSymlink(series)) {
    steps.push((b) =>
      step(
        "addPython",
        `addPython ${series}: /usr/local/bin/python → python3`,
        [{ op: "COPY", source: "links", dest: "/usr/local/bin/", sources: ["/bin/."], from: SYMLINK_STAGE }],
        [
          {
            kind: "select",
            name: "links",
            root: { kind: "stage", stage: SYMLINK_STAGE, plan: symlinkStagePlan(b, method) },
            patterns: ["/bin/."],
          },
        ],
      ),
    );
  }
  steps.push(() =>
    step(
      "addPython",
      `addPython ${series}: env TERMINFO_DIRS`,
      [{ op: "ENV", vars: [["TERMINFO_DIRS", TERMINFO_DIRS]] }],
      [],
    ),
  );
  return steps;
}
