// ZenML's Modal step operator, translated call for call: `build_modal_image` of
//   zenml-io/zenml @ 00232ea84fb548525cff3abb6b063c1152b4d9bc
//   src/zenml/integrations/modal/utils.py (called by src/zenml/integrations/modal/step_operators/modal_step_operator.py)
//   (Apache-2.0)
//
//   registry_secret = modal.Secret.from_dict({"REGISTRY_USERNAME": docker_username,
//                                             "REGISTRY_PASSWORD": docker_password})
//   modal_image = modal.Image.from_registry(image_name, secret=registry_secret).pip_install("modal")
//   if environment:
//       modal_image = modal_image.env(environment)
//
// The private image is the one ZenML built and pushed to the stack's container registry (ZENML_IMAGE, with the
// registry's credentials in ZENML_REGISTRY_USERNAME / ZENML_REGISTRY_PASSWORD). `modal` cannot come from PyPI here:
// it is SUBSTITUTED by the test wheel tinypkg from a loopback index (WHEELS_URL).
import { Image, Secret } from "strata";

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`examples/zenml.ts: set ${name} (see the comment at the top of this file)`);
  return v;
}

const imageName = required("ZENML_IMAGE");
// The step's environment, as ZenML passes it to the step operator.
const environment: Record<string, string> = { ZENML_STEP_OPERATOR: "modal", ZENML_LOGGING_VERBOSITY: "INFO" };

const registrySecret = Secret.fromObject({
  REGISTRY_USERNAME: required("ZENML_REGISTRY_USERNAME"),
  REGISTRY_PASSWORD: required("ZENML_REGISTRY_PASSWORD"),
});

export default Image.fromRegistry(imageName, { secret: registrySecret })
  // "modal"
  .pipInstall("tinypkg", { indexUrl: process.env.WHEELS_URL, network: "host" })
  .env(environment);
