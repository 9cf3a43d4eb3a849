/**
 * The network a RUN step gets when it names none. Steps default to the sandboxed network (their own namespace with
 * egress, no route to the host); STRATA_NETWORK (or `strata build --network`) sets another default for a build. A
 * default other than the sandbox is written into the step's instructions before keying, so a step built with the host
 * network (or none) never shares a cache entry with the sandboxed one.
 */
import type { Instruction } from "../plan/instructions.js";
import { withRunNetwork } from "../plan/network.js";
import type { NetworkMode } from "../sandbox/runtime-spec.js";

export { defaultNetwork } from "../sandbox/runtime-spec.js";

/** The instructions with the default network written into every RUN that names none (pure). */
export function withDefaultNetwork(instructions: readonly Instruction[], mode: NetworkMode): Instruction[] {
  return mode === "sandbox" ? [...instructions] : withRunNetwork(instructions, mode);
}
