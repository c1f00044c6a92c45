/* Runs until stopped from outside: for tests of Ctrl-C, SIGTERM and a killed vcpu process. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
guest_main:
  PUTS "moss-test-guest: spinning\n"
1: pause
  jmp 1b
