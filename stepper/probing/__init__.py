"""`stepper probe` as a library, above stepper.api: checking probe sites in the files before
the program starts (`preflight`: refusals, IFUNC expansion), inserting them as objects appear
(`insert`: the Inserter and the table's rows), following the processes of a probed run
(`follow`: probes carried across fork and exec, hits counted per process) and the report
(`report`: the table and the JSON). stepper.commands.probe is the command line over these.
"""
