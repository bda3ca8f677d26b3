"""Real-kernel test lab: emulated uplinks in network namespaces (`netlab`) and a
QEMU runner booting Debian's own kernel for features the host kernel lacks, such as VRF (`vm`)."""
