"""Real-kernel test lab: emulated uplinks in network namespaces (`netlab`) and a
user-mode-linux runner for features the host kernel lacks, such as VRF (`uml`)."""
