// Filled in by the codec work of issue 2.
export {};
