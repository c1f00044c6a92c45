/* e820 map: prints every entry of boot_params' e820 table, then proves the last RAM entry is
   backed by memory by writing and reading its last quadword. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
guest_main:
  movzx ecx, byte ptr [r15 + 0x1e8]   /* e820_entries */
  lea rbx, [r15 + 0x2d0]              /* e820_table */
  xor r14, r14                        /* End of the last RAM entry seen. */
.Lnext:
  test ecx, ecx
  jz .Ldone
  PUTS "e820 "
  mov rax, [rbx]
  call puthex
  PUTS " "
  mov rax, [rbx + 8]
  call puthex
  PUTS " "
  mov eax, [rbx + 16]
  call puthex
  PUTS "\n"
  cmp dword ptr [rbx + 16], 1
  jne .Lskip
  mov r14, [rbx]
  add r14, [rbx + 8]
.Lskip:
  add rbx, 20
  dec ecx
  jmp .Lnext
.Ldone:
  test r14, r14
  FAIL_IF z, 2
  mov rax, 0x5a5aa5a5deadbeef
  mov [r14 - 8], rax
  cmp [r14 - 8], rax
  FAIL_IF ne, 3
  PUTS "moss-test-guest: top of RAM is backed\n"
  xor eax, eax
  ret
