/** The runtime-config defaults Docker and BuildKit give an image that sets none (its PATH, the shell of shell forms). */

/** The PATH a RUN gets when the image sets none, and a Dockerfile `FROM scratch` stage starts with. */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** The shell that runs shell-form RUN, CMD and ENTRYPOINT when the image sets no SHELL. */
export const DEFAULT_SHELL = ["/bin/sh", "-c"];
