/**
 * The instruction set every step compiles to: a typed form of Dockerfile instructions. The SDK and the Dockerfile
 * importer both produce these; the engine executes them; `render` gives the canonical Dockerfile text used in logs,
 * image history and cache keys.
 */

/**
 * A mount for one RUN, never captured in the layer:
 * - `bind`: a step input (`Step.inputs` by name: an inline file, or a `select` input's paths) or a builder-provided
 *   source such as `builder:node`; read-only unless `readonly` is false (writes are then discarded).
 * - `cache`: a directory kept in the store between builds, shared by every RUN that names the same `id`; its
 *   contents never enter a layer or a key. `seed` names a step input (a `select` of a stage's, an image's or the
 *   context's directory: `RUN --mount=type=cache,from=…,source=…`) whose files a new cache starts with; the cache is
 *   then kept per `id` and seed content, and the seed's entries are keyed as the step's input. `source` mounts that
 *   path inside an unseeded cache instead of its root (it must exist there).
 * - `secret`: the build's secret `id` as a file at `target` (default `/run/secrets/<id>`) or as the environment
 *   variable `env`; the value is never keyed, stored or logged.
 * - `tmpfs`: an empty in-memory filesystem.
 */
export type RunMount =
  | { type: "bind"; source: string; target: string; readonly: boolean }
  | {
      type: "cache";
      id: string;
      target: string;
      sharing: "shared" | "private" | "locked";
      readonly?: boolean;
      mode?: number;
      uid?: number;
      gid?: number;
      /** A step input whose files a new cache starts with (`from=`, with `source=` as its path there). */
      seed?: string;
      /** A path inside the (unseeded) cache to mount instead of its root, relative, `..` kept inside it. */
      source?: string;
    }
  | {
      type: "secret";
      id: string;
      target?: string;
      env?: string;
      required?: boolean;
      mode?: number;
      uid?: number;
      gid?: number;
    }
  | { type: "tmpfs"; target: string; size?: number };

/**
 * Dockerfile COPY/ADD options. When `sources` is set the copy follows Dockerfile rules: the step inputs named by
 * `source` then `inputs` (a `select` input's matched paths, then heredoc files) are copied in order to `dest`
 * (relative to WORKDIR; a trailing `/`, several sources or an existing directory make it a directory).
 */
export interface CopyOptions {
  /** The sources as written (paths, globs, `<<NAME` heredocs), for the rendered text. */
  sources?: string[];
  /** More inputs copied after `source`, in order. */
  inputs?: string[];
  /** `--from` as written (a stage name or index, or an image). */
  from?: string;
  /** `user[:group]`, names resolved in the destination image's /etc/passwd and /etc/group. */
  chown?: string;
  /** Octal (`755`) or symbolic (`u=rwX,go=rX`). */
  chmod?: string;
  link?: boolean;
  exclude?: string[];
  parents?: boolean;
}

export type Instruction =
  /**
   * `hostname`: the sandbox's hostname (default `strata`), set by a Dockerfile build's `hostname` option or
   * `BUILDKIT_SANDBOX_HOSTNAME`. Not rendered: keyed as the derived extra `run.hostname` (src/keys/step-extra.ts).
   */
  | { op: "RUN"; command: string | string[]; mounts?: RunMount[]; network?: "host" | "none"; hostname?: string }
  | ({ op: "COPY"; source: string; dest: string } & CopyOptions)
  /** ADD: COPY plus local archives (tar, gzip, bzip2, xz; by content) extracted into `dest` unless `unpack` is false. */
  | ({ op: "ADD"; source: string; dest: string; unpack?: boolean; checksum?: string } & CopyOptions)
  | { op: "ENV"; vars: [string, string][] }
  /** `create`: make the directory (owned by USER) if it does not exist, as a Dockerfile WORKDIR does. */
  | { op: "WORKDIR"; path: string; create?: boolean }
  | { op: "USER"; user: string }
  /** `keepCmd`: the CMD was set in this same definition (Docker resets only an inherited CMD). Not rendered: it is
   * determined by the chain up to the parent, which the parent's image id already pins. `shell`: `argv` is one
   * command string, run by the image's SHELL. */
  | { op: "ENTRYPOINT"; argv: string[]; keepCmd?: boolean; shell?: boolean }
  | { op: "CMD"; argv: string[]; shell?: boolean }
  | { op: "SHELL"; argv: string[] }
  | { op: "LABEL"; labels: [string, string][] }
  /** Declares build args (no config change; values are keyed by the steps that use them, not here). */
  | { op: "ARG"; names: string[] }
  /** `port/proto` entries. */
  | { op: "EXPOSE"; ports: string[] }
  | { op: "VOLUME"; paths: string[] }
  | { op: "STOPSIGNAL"; signal: string }
  /** `test`: `["NONE"]`, `["CMD", argv…]` or `["CMD-SHELL", command]`; durations in nanoseconds. */
  | {
      op: "HEALTHCHECK";
      test: string[];
      interval?: number;
      timeout?: number;
      startPeriod?: number;
      startInterval?: number;
      retries?: number;
    }
  /** Adds a trigger; without `expression`, clears the triggers (a base's, once a build has run them). */
  | { op: "ONBUILD"; expression?: string }
  | { op: "MAINTAINER"; name: string };

/** Instructions that only change the image config and produce no layer. */
export function isMetadataOnly(ins: Instruction): boolean {
  return ins.op !== "RUN" && ins.op !== "COPY" && ins.op !== "ADD" && !(ins.op === "WORKDIR" && ins.create);
}

/** Quotes a word for a POSIX shell the way Python's shlex.quote does (Modal's convention). */
export function shellQuote(word: string): string {
  if (word === "") return "''";
  if (/^[A-Za-z0-9@%+=:,./_-]+$/.test(word)) return word;
  return "'" + word.replace(/'/g, `'"'"'`) + "'";
}

function quoteEnvValue(v: string): string {
  // Dockerfile ENV value: double-quoted when it contains anything but safe characters.
  if (v !== "" && /^[A-Za-z0-9@%+=:,./_-]+$/.test(v)) return v;
  return '"' + v.replace(/(["\\$`])/g, "\\$1").replace(/\n/g, "\\n") + '"';
}

function renderMount(m: RunMount): string {
  switch (m.type) {
    case "bind":
      return `--mount=type=bind,source=${m.source},target=${m.target},${m.readonly ? "readonly" : "rw"}`;
    case "cache":
      return [
        `--mount=type=cache,id=${m.id},target=${m.target},sharing=${m.sharing}`,
        ...(m.readonly ? ["readonly"] : []),
        ...(m.mode !== undefined ? [`mode=${m.mode.toString(8)}`] : []),
        ...(m.uid !== undefined ? [`uid=${m.uid}`] : []),
        ...(m.gid !== undefined ? [`gid=${m.gid}`] : []),
        ...(m.seed !== undefined ? [`seed=${m.seed}`] : []),
        ...(m.source !== undefined ? [`source=${m.source}`] : []),
      ].join(",");
    case "secret":
      return [
        `--mount=type=secret,id=${m.id}`,
        ...(m.target !== undefined ? [`target=${m.target}`] : []),
        ...(m.env !== undefined ? [`env=${m.env}`] : []),
        ...(m.required ? ["required"] : []),
        ...(m.mode !== undefined ? [`mode=${m.mode.toString(8)}`] : []),
        ...(m.uid !== undefined ? [`uid=${m.uid}`] : []),
        ...(m.gid !== undefined ? [`gid=${m.gid}`] : []),
      ].join(",");
    case "tmpfs":
      return `--mount=type=tmpfs,target=${m.target}${m.size !== undefined ? `,size=${m.size}` : ""}`;
  }
}

function renderCopy(
  op: "COPY" | "ADD",
  ins: { source: string; dest: string; unpack?: boolean; checksum?: string } & CopyOptions,
): string {
  if (!ins.sources) return `${op} ${ins.source} ${ins.dest}`;
  const flags = [
    ...(ins.from !== undefined ? [`--from=${ins.from}`] : []),
    ...(ins.chown !== undefined ? [`--chown=${ins.chown}`] : []),
    ...(ins.chmod !== undefined ? [`--chmod=${ins.chmod}`] : []),
    ...(ins.link ? ["--link"] : []),
    ...(ins.parents ? ["--parents"] : []),
    ...(ins.exclude ?? []).map((e) => `--exclude=${e}`),
    ...(ins.unpack !== undefined ? [`--unpack=${ins.unpack}`] : []),
    ...(ins.checksum !== undefined ? [`--checksum=${ins.checksum}`] : []),
  ];
  const words = [...ins.sources, ins.dest];
  // Words with spaces use the JSON form, so the text stays unambiguous.
  const body = words.some((w) => /\s/.test(w)) ? JSON.stringify(words) : words.join(" ");
  return [op, ...flags, body].join(" ");
}

function nsDuration(ns: number): string {
  return ns % 1e9 === 0 ? `${ns / 1e9}s` : `${ns / 1e6}ms`;
}

/** Canonical Dockerfile text of one instruction. */
export function render(ins: Instruction): string {
  switch (ins.op) {
    case "RUN": {
      const flags = [...(ins.mounts ?? []).map(renderMount), ...(ins.network ? [`--network=${ins.network}`] : [])];
      const cmd = typeof ins.command === "string" ? ins.command : JSON.stringify(ins.command);
      return ["RUN", ...flags, cmd].join(" ");
    }
    case "COPY":
    case "ADD":
      return renderCopy(ins.op, ins);
    case "ENV":
      return "ENV " + ins.vars.map(([k, v]) => `${k}=${quoteEnvValue(v)}`).join(" ");
    case "WORKDIR":
      return `WORKDIR ${ins.path}`;
    case "USER":
      return `USER ${ins.user}`;
    case "ENTRYPOINT":
    case "CMD":
      return ins.shell ? `${ins.op} ${ins.argv[0] ?? ""}` : `${ins.op} ${JSON.stringify(ins.argv)}`;
    case "SHELL":
      return `${ins.op} ${JSON.stringify(ins.argv)}`;
    case "LABEL":
      return "LABEL " + ins.labels.map(([k, v]) => `${quoteEnvValue(k)}=${quoteEnvValue(v)}`).join(" ");
    case "ARG":
      return `ARG ${ins.names.join(" ")}`;
    case "EXPOSE":
      return `EXPOSE ${ins.ports.join(" ")}`;
    case "VOLUME":
      return `VOLUME ${JSON.stringify(ins.paths)}`;
    case "STOPSIGNAL":
      return `STOPSIGNAL ${ins.signal}`;
    case "HEALTHCHECK": {
      if (ins.test[0] === "NONE") return "HEALTHCHECK NONE";
      const flags = [
        ...(ins.interval !== undefined ? [`--interval=${nsDuration(ins.interval)}`] : []),
        ...(ins.timeout !== undefined ? [`--timeout=${nsDuration(ins.timeout)}`] : []),
        ...(ins.startPeriod !== undefined ? [`--start-period=${nsDuration(ins.startPeriod)}`] : []),
        ...(ins.startInterval !== undefined ? [`--start-interval=${nsDuration(ins.startInterval)}`] : []),
        ...(ins.retries !== undefined ? [`--retries=${ins.retries}`] : []),
      ];
      const cmd = ins.test[0] === "CMD-SHELL" ? (ins.test[1] ?? "") : JSON.stringify(ins.test.slice(1));
      return ["HEALTHCHECK", ...flags, "CMD", cmd].join(" ");
    }
    case "ONBUILD":
      return ins.expression === undefined ? "ONBUILD" : `ONBUILD ${ins.expression}`;
    case "MAINTAINER":
      return `MAINTAINER ${ins.name}`;
  }
}
