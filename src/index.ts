/** Strata's public API: define images by chaining, build them, inspect and export the results. */
export { Image } from "./sdk/image.js";
export type {
  ImageStepParams,
  ImageRunCommandsParams,
  ImageAptInstallParams,
  ImagePipInstallParams,
  ImageUvPipInstallParams,
  ImageRunFunctionParams,
  ImageRunParams,
  ImageAddLocalParams,
  ImageAddLocalPythonSourceParams,
  ImagePipInstallFromPyprojectParams,
  ImagePoetryInstallParams,
  ImageDebianSlimParams,
  ImageFromRegistryParams,
  ImageFromDockerfileParams,
  ImageDockerfileCommandsParams,
  ImageBuildParams,
} from "./sdk/params.js";
export { Secret } from "./sdk/secret.js";
export { Volume } from "./sdk/volume.js";
export type { SecretLike } from "./sdk/secret.js";
export { build } from "./build.js";
export type { BuildParams, BuildOptions, BuiltImage, StepResult, Plan, SecretValues } from "./build.js";
export { LocalStore, defaultStoreRoot } from "./store/local.js";
export type {
  Store,
  BuildStore,
  BlobStore,
  ImageStore,
  HistoryStore,
  LayerDirStore,
  LockStore,
  StoreMaintenance,
  WorkSpace,
  ImageRecord,
  LayerRecord,
} from "./store/store.js";
export { StoreLayout } from "./store/layout.js";
export {
  StrataError,
  InvalidDefinitionError,
  DefinitionLoadError,
  LocalPathError,
  UnknownBuilderVersionError,
  StepFailedError,
  DigestMismatchError,
  NotFoundError,
  StoreError,
  SandboxError,
  MissingToolError,
  BuildCancelledError,
  MissingSecretError,
  LimitError,
  CgroupError,
} from "./errors.js";
