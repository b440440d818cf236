// What @tensorflow/tfjs-node-gpu needs at run time, read from `ldconfig -p` (vscode-free, unit-tested).
export const TFJS_NODE_GPU = '@tensorflow/tfjs-node-gpu@4.22.0';

export interface CudaCheck {
  ok: boolean;
  cudart11: boolean;
  cudnn8: boolean;
  driver: boolean;
  explanation: string;
}

/** Reads `ldconfig -p` output (and whether nvidia-smi ran) into what tfjs-node-gpu needs. */
export function checkCudaLibraries(ldconfigOutput: string, nvidiaSmiRan: boolean): CudaCheck {
  const cudart11 = /libcudart\.so\.11\.0\b/.test(ldconfigOutput);
  const cudnn8 = /libcudnn\.so\.8\b/.test(ldconfigOutput);
  const missing = [
    nvidiaSmiRan ? '' : 'an NVIDIA driver (nvidia-smi did not run)',
    cudart11 ? '' : 'CUDA 11.x runtime (libcudart.so.11.0; tfjs-node-gpu 4.22 is built against CUDA 11.2 and does not load CUDA 12)',
    cudnn8 ? '' : 'cuDNN 8 (libcudnn.so.8; 8.1 expected)',
  ].filter(Boolean);
  return {
    ok: missing.length === 0,
    cudart11,
    cudnn8,
    driver: nvidiaSmiRan,
    explanation: missing.length ? `Missing: ${missing.join('; ')}. Without them the trainer falls back to the CPU (wasm) backend.` : 'CUDA 11 runtime, cuDNN 8 and an NVIDIA driver were found.',
  };
}
