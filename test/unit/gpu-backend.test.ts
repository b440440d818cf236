import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkCudaLibraries } from '../../src/extension/gpu/cudaCheck';

test('CUDA 11 + cuDNN 8 + driver is ready for tfjs-node-gpu', () => {
  const ld = '\tlibcudart.so.11.0 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.11.0\n\tlibcudnn.so.8 (libc6,x86-64) => /usr/lib/libcudnn.so.8\n';
  const c = checkCudaLibraries(ld, true);
  assert.equal(c.ok, true);
});

test('CUDA 12 alone is explained as not loadable', () => {
  const c = checkCudaLibraries('\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12\n', true);
  assert.equal(c.ok, false);
  assert.equal(c.cudart11, false);
  assert.match(c.explanation, /CUDA 11/);
  assert.match(c.explanation, /cuDNN 8/);
  assert.doesNotMatch(c.explanation, /driver/);
});

test('no driver is named as missing', () => {
  const c = checkCudaLibraries('', false);
  assert.equal(c.driver, false);
  assert.match(c.explanation, /NVIDIA driver/);
});
