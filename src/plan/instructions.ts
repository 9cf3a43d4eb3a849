/**
 * The instruction set every step compiles to: a typed form of Dockerfile instructions. The SDK and the Dockerfile
 * importer both produce these; the engine executes them; `render` gives the canonical Dockerfile text used in logs,
 * image history and cache keys.
 */

/** A bind mount for a RUN: a step-private file provided by the builder (never captured in the layer). */
export interface RunMount {
  type: "bind";
  /** Name of a step input (`Step.files`) or a builder-provided source such as `builder:node`. */
  source: string;
  target: string;
  readonly: true;
}

export type Instruction =
  | { op: "RUN"; command: string | string[]; mounts?: RunMount[]; network?: "host" | "none" }
  | { op: "COPY"; source: string; dest: string }
  | { op: "ENV"; vars: [string, string][] }
  | { op: "WORKDIR"; path: string }
  | { op: "USER"; user: string }
  /** `keepCmd`: the CMD was set in this same definition (Docker resets only an inherited CMD). Not rendered: it is
   * determined by the chain up to the parent, which the parent's image id already pins. */
  | { op: "ENTRYPOINT"; argv: string[]; keepCmd?: boolean }
  | { op: "CMD"; argv: string[] }
  | { op: "SHELL"; argv: string[] }
  | { op: "LABEL"; labels: [string, string][] };

/** Instructions that only change the image config and produce no layer. */
export function isMetadataOnly(ins: Instruction): boolean {
  return ins.op !== "RUN" && ins.op !== "COPY";
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

/** Canonical Dockerfile text of one instruction. */
export function render(ins: Instruction): string {
  switch (ins.op) {
    case "RUN": {
      const flags = [
        ...(ins.mounts ?? []).map((m) => `--mount=type=bind,source=${m.source},target=${m.target},readonly`),
        ...(ins.network && ins.network !== "host" ? [`--network=${ins.network}`] : []),
      ];
      const cmd = typeof ins.command === "string" ? ins.command : JSON.stringify(ins.command);
      return ["RUN", ...flags, cmd].join(" ");
    }
    case "COPY":
      return `COPY ${ins.source} ${ins.dest}`;
    case "ENV":
      return "ENV " + ins.vars.map(([k, v]) => `${k}=${quoteEnvValue(v)}`).join(" ");
    case "WORKDIR":
      return `WORKDIR ${ins.path}`;
    case "USER":
      return `USER ${ins.user}`;
    case "ENTRYPOINT":
    case "CMD":
    case "SHELL":
      return `${ins.op} ${JSON.stringify(ins.argv)}`;
    case "LABEL":
      return "LABEL " + ins.labels.map(([k, v]) => `${quoteEnvValue(k)}=${quoteEnvValue(v)}`).join(" ");
  }
}
