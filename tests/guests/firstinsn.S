/* For start-up benchmarks: the very first instruction at each entry point ends the VM.
   moss enters at the 64-bit entry and sees the exit port; QEMU's firmware loader enters the
   real-mode setup code, which writes to isa-debug-exit (port 0xf4). */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_START
  mov dx, EXIT_PORT
  xor eax, eax
  out dx, eax
1: cli
  hlt
  jmp 1b
