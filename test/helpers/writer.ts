// The writer process lives with the demo; tests use the same code.
export { startWriter, type Writer, type WriterReport } from '../../src/demo/host-writer.js';
