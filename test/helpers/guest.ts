// The QEMU guest kit lives with the demo; tests use the same code.
export * from '../../src/demo/guest.js';
