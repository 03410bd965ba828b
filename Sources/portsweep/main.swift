import PortsweepCLI

// Before anything starts threads: under a handful of descriptors the runtime itself (libdispatch) cannot run,
// so that is said in one line instead of a trap.
PortsweepCommand.requireDescriptors()
await PortsweepCommand.runMain()
