"""What the command-line programs share: flags generated from the config dataclasses,
their conversion into those dataclasses, and start-up. Only the programs import this
package; the library never reads FLAGS."""
