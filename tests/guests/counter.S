/* Counts forever, one line per tick, with the count only in a register (r12): for tests of
   pause, resume and vCPU state save/restore (a restored vCPU counts from where it was saved,
   since memory holds no count). */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
guest_main:
  xor r12, r12
1: inc r12
  PUTS "moss-test-guest: tick "
  mov rax, r12
  call puthex
  PUTS "\n"
  mov ecx, 3000000
2: dec ecx
  jnz 2b
  jmp 1b
