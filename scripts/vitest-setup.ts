import fc from 'fast-check';

// Property tests draw a fresh random seed on every local run, so they keep exploring. In CI the
// seed is fixed (FC_SEED overrides it either way) so a landing never depends on the luck of a
// draw; a failure prints the seed and path to replay it with FC_SEED.
const fromEnv = process.env['FC_SEED'];
const seed = fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) : process.env['CI'] ? 20261125 : undefined;
if (seed !== undefined && Number.isInteger(seed)) fc.configureGlobal({ ...fc.readConfigureGlobal(), seed });
