/**
 * Host ids the sandbox uses. A step's user namespace maps container ids 0…ID_COUNT-1 to host ids
 * HOST_ID_BASE…HOST_ID_BASE+ID_COUNT-1, a range far above the ones Debian hands out in /etc/subuid (100000 + 65536·n),
 * so no local user owns it. slirp4netns runs with group SLIRP_GID, just past the range, which the egress guard matches.
 * STRATA_SANDBOX_ID_BASE moves the range (an operator whose ids collide).
 */
import { SandboxError } from "../errors.js";

function base(): number {
  const v = process.env.STRATA_SANDBOX_ID_BASE;
  if (v === undefined || v === "") return 1_500_000_000;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 65536 || n > 4_000_000_000) {
    throw new SandboxError(
      `STRATA_SANDBOX_ID_BASE=${JSON.stringify(v)}: expected an integer between 65536 and 4000000000`,
    );
  }
  return n;
}

export const HOST_ID_BASE = base();
export const ID_COUNT = 65536;
export const SLIRP_GID = HOST_ID_BASE + ID_COUNT;
