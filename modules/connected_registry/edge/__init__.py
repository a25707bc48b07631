"""Where the configuration comes from (the module twin, or a file outside IoT Edge) and where state is reported."""
