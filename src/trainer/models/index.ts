// Model families and the data each trains on, picked by `model.family` in the config.
import type * as TF from '@tensorflow/tfjs';
import type { TrainingConfig } from '../../protocol';
import { imageTaskData, loadDataset } from '../data';
import { loadTextData } from '../textData';
import { BertEncoder } from './bertEncoder';
import { MoeMlp } from './moeMlp';
import { SwitchTransformerLm } from './switchTransformer';
import type { Batch, PlModel, TaskData } from './types';
import { VggNet } from './vgg';

export type { Batch, PlModel, StepOptions, StepResult, TaskData } from './types';

export function loadTaskData(config: TrainingConfig, configDir: string): TaskData {
  return config.data.source === 'text' ? loadTextData(config, configDir) : imageTaskData(loadDataset(config, configDir));
}

/** The fixed probe batch every run measures κ on: the first `monitor.probeSize` training examples. */
export function probeBatch(tf: typeof TF, config: TrainingConfig, data: TaskData): Batch {
  const n = Math.min(config.monitor.probeSize, data.trainSize);
  return data.batch(tf, 'train', Int32Array.from({ length: n }, (_, i) => i));
}

export function createModel(tf: typeof TF, config: TrainingConfig, data: TaskData): PlModel {
  switch (config.model.family) {
    case 'moe-mlp':
      return new MoeMlp(tf, data.features, data.classes, config);
    case 'switch-transformer':
      return new SwitchTransformerLm(tf, config, data);
    case 'bert-encoder':
      return new BertEncoder(tf, config, data);
    case 'vgg':
      return new VggNet(tf, config, data);
  }
}
