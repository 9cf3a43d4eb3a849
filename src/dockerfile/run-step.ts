/**
 * A Dockerfile RUN as a step: shell or exec form, heredocs (BuildKit's three cases: a script with a shebang is
 * mounted and run, a whole-command heredoc is the command, others are appended to the shell command), mounts (bind
 * from the context, a stage or an image; cache, seeded `from=` one of those; secret; tmpfs) and `--network`. Every
 * ARG in scope is the RUN's build args (exported to it, keyed); the proxy build args are given to it unkeyed. With
 * `secretsAsEnv` (the SDK's Dockerfile steps), every given secret is also in its environment, and `env` is added to
 * it.
 */
import path from "node:path";
import type { BuilderVersion } from "../builder-version.js";
import { InvalidDefinitionError } from "../errors.js";
import { HOSTNAME_BUILD_ARG, HOSTNAME_RULE, isValidHostname } from "../plan/hostname.js";
import type { Instruction, RunMount } from "../plan/instructions.js";
import type { Plan, StepInput } from "../plan/step.js";
import type { RunMount as PlannedMount } from "./commands.js";
import type { PlannedInstruction } from "./expand-instruction.js";
import { parseHeredocMarker } from "./parse.js";
import type { DockerfileStepOptions, StepMaker, TranslationContext } from "./stage-chain.js";

/** The step maker of a RUN, and the secret names it uses (sorted): those it mounts, or with `secretsAsEnv` all given. */
export function runStep(
  t: TranslationContext,
  pi: Extract<PlannedInstruction, { kind: "RUN" }>,
  self: number,
  reads: Set<number>,
): { make: StepMaker; secrets: string[] } {
  const at = t.loc(pi);
  if (pi.security === "insecure")
    t.fail(at, "RUN --security=insecure is not supported (Strata runs every command in its sandbox)");
  let command: string | string[] = pi.prependShell ? pi.command.join(" ") : [...pi.command];
  const inputs: ((b: BuilderVersion, sp: (s: number, b: BuilderVersion) => Plan) => StepInput)[] = [];
  const mounts: RunMount[] = [];
  if (pi.heredocs.length > 0) {
    if (typeof command !== "string") t.fail(at, "RUN with a heredoc must use the shell form");
    const chomp = (h: { content: string; chomp: boolean }) => (h.chomp ? h.content.replace(/^\t+/gm, "") : h.content);
    const whole = parseHeredocMarker(command.trim());
    const first = pi.heredocs[0]!;
    if (whole && whole.name === first.name) {
      const data = chomp(first);
      if (data.startsWith("#!")) {
        const name = `<<${first.name}`;
        inputs.push(() => ({ kind: "inline", name, content: data, mode: 0o755 }));
        mounts.push({ type: "bind", source: name, target: `/dev/pipes/${first.name}`, readonly: true });
        command = `/dev/pipes/${first.name}`;
      } else {
        command = data;
      }
    } else {
      let full = command;
      for (const h of pi.heredocs) full += "\n" + h.content + h.name;
      command = full;
    }
  }
  const given = new Set(t.opts.secrets ?? []);
  const usedSecrets = new Set<string>();
  pi.mounts.forEach((m: PlannedMount, k: number) => {
    switch (m.type) {
      case "ssh":
        t.fail(at, "RUN --mount=type=ssh is not supported (Strata does not forward an SSH agent into builds)");
        return;
      case "tmpfs":
        mounts.push({ type: "tmpfs", target: m.target, ...(m.sizeBytes !== undefined ? { size: m.sizeBytes } : {}) });
        return;
      case "cache": {
        // BuildKit: `from=` seeds a new cache with that stage's, image's or the context's `source` (default its
        // root); without `from=`, `source=` is a path inside the cache (BuildKit joins it onto "/", so `..` stays in).
        let seed: string | undefined;
        let source: string | undefined;
        if (m.from !== undefined) {
          const name = `mount${k}`;
          seed = name;
          const root = t.selectRoot(m.from, self, reads, at);
          const pattern = m.source ?? "/";
          inputs.push((b, sp) => ({ kind: "select", name, root: root(b, sp), patterns: [pattern], location: at }));
        } else if (m.source !== undefined) {
          const inCache = path.posix.resolve("/", m.source).slice(1);
          if (inCache !== "") source = inCache;
        }
        mounts.push({
          type: "cache",
          id: m.id ?? m.target,
          target: m.target,
          sharing: m.sharing ?? "shared",
          ...(m.readOnly ? { readonly: true } : {}),
          ...(m.mode !== undefined ? { mode: m.mode } : {}),
          ...(m.uid !== undefined ? { uid: m.uid } : {}),
          ...(m.gid !== undefined ? { gid: m.gid } : {}),
          ...(seed !== undefined ? { seed } : {}),
          ...(source !== undefined ? { source } : {}),
        });
        return;
      }
      case "secret": {
        const id = m.id ?? "";
        if (!given.has(id)) {
          if (m.required)
            t.fail(
              at,
              `RUN --mount=type=secret,id=${id}: the build has no secret named ${JSON.stringify(id)} (pass it in the secrets option)`,
            );
          return; // BuildKit skips a missing optional secret
        }
        usedSecrets.add(id);
        mounts.push({
          type: "secret",
          id,
          // BuildKit (dispatchSecret): the default /run/secrets/<id> file applies only without env=; a secret given as
          // env only is no file, and env= with a target (even the default path) is both.
          ...(m.target ? { target: m.target } : m.env === undefined ? { target: `/run/secrets/${id}` } : {}),
          ...(m.env !== undefined ? { env: m.env } : {}),
          ...(m.required ? { required: true } : {}),
          ...(m.mode !== undefined ? { mode: m.mode } : {}),
          ...(m.uid !== undefined ? { uid: m.uid } : {}),
          ...(m.gid !== undefined ? { gid: m.gid } : {}),
        });
        return;
      }
      case "bind": {
        const name = `mount${k}`;
        const root = t.selectRoot(m.from, self, reads, at);
        const source = m.source ?? (m.from === undefined ? "." : "/");
        inputs.push((b, sp) => ({ kind: "select", name, root: root(b, sp), patterns: [source], location: at }));
        mounts.push({ type: "bind", source: name, target: m.target, readonly: m.readOnly });
        return;
      }
    }
  });
  const network = pi.network === "none" || pi.network === "host" ? pi.network : t.opts.network;
  const hostname = sandboxHostname(t.opts);
  const ins: Instruction = {
    op: "RUN",
    command,
    ...(mounts.length ? { mounts } : {}),
    // `--network=default` (or none given) is the build's network (`docker build --network`), else the builder's.
    ...(network ? { network } : {}),
    ...(hostname !== undefined ? { hostname } : {}),
  };
  const args: [string, string][] = pi.argsInScope.map(([k, v]) => [k, v]);
  // RUN sees every ARG in scope, so all of them are keyed (Step.buildArgs → KeyInputs.buildArgs).
  const common = t.common(pi, [ins], [], args);
  const proxyEnv = t.proxyEnv();
  if (proxyEnv.length) common.proxyEnv = proxyEnv;
  // As Modal's Dockerfile steps: every given secret is the RUN's environment (its mounts still mount as BuildKit's).
  const asEnv = t.opts.secretsAsEnv === true && given.size > 0;
  const secrets = (asEnv ? [...given] : [...usedSecrets]).sort();
  if (asEnv) common.secretsAsEnv = true;
  if (t.opts.env && Object.keys(t.opts.env).length) common.env = { ...t.opts.env };
  const make: StepMaker = (b, sp) => ({
    ...common,
    instructions: structuredClone(common.instructions),
    secrets: [...secrets],
    inputs: inputs.map((f) => f(b, sp)),
  });
  return { make, secrets };
}

/**
 * The hostname the build's RUNs get: `BUILDKIT_SANDBOX_HOSTNAME` from the build args, else the `hostname` option, else
 * none (the sandbox's default); a value that is no hostname is refused, naming where it came from.
 */
export function sandboxHostname(opts: Pick<DockerfileStepOptions, "buildArgs" | "hostname">): string | undefined {
  const fromArg = opts.buildArgs !== undefined && Object.hasOwn(opts.buildArgs, HOSTNAME_BUILD_ARG);
  const name = fromArg ? opts.buildArgs![HOSTNAME_BUILD_ARG] : opts.hostname;
  if (name === undefined) return undefined;
  if (!isValidHostname(name)) {
    const where = fromArg ? `build arg ${HOSTNAME_BUILD_ARG}` : "hostname";
    throw new InvalidDefinitionError(`${where}: ${JSON.stringify(name)} is not a valid hostname: ${HOSTNAME_RULE}`);
  }
  return name;
}
