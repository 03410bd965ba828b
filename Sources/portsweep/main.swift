import PortsweepCLI

await PortsweepCommand.runMain()
