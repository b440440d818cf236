// PL estimators: float64 reference math (eigen, tangentKernel) and the differentiable regularizer (tfjs).
export * from './eigen';
export * from './tangentKernel';
export * from './regularizer';
export * from './jacobianKernel';
export * from './spectralNorm';
export * from './pruner';
export * from './opt';
export * from './hessianTrace';
export * from './dampingFloor';
export * from './share';
