/* SMP start-up: the MP table must list the vCPUs; then the bootstrap CPU starts APIC id 1
   with INIT and two SIPIs at a real-mode trampoline, which sets a flag. Status 0 means the
   second vCPU ran; 21 means the MP table is missing; 22 means the AP had not run 3 s (of PIT
   time, whatever the speed of the guest's code) after the second SIPI. */
#include "guest.h"
BZIMAGE_HEADER
KERNEL_ENTRY
#define TRAMPOLINE 0x8000
#define AP_FLAG 0x8100
guest_main:
  mov edi, 0x9fc00
  cmp dword ptr [rdi], 0x5f504d5f     /* "_MP_" */
  FAIL_IF ne, 21
  mov esi, [rdi + 4]                  /* Configuration table. */
  movzx ecx, word ptr [rsi + 34]      /* Entry count. */
  lea rbx, [rsi + 44]
  xor edx, edx                        /* Processors found. */
.Lentry:
  test ecx, ecx
  jz .Lcounted
  cmp byte ptr [rbx], 0
  jne .Lother
  inc edx
  add rbx, 20
  dec ecx
  jmp .Lentry
.Lother:
  add rbx, 8
  dec ecx
  jmp .Lentry
.Lcounted:
  PUTS "moss-test-guest: mptable cpus "
  mov eax, edx
  call puthex
  PUTS "\n"
  /* Copy the trampoline to 0x8000 and clear the flag. */
  lea rsi, [rip + ap_trampoline]
  mov edi, TRAMPOLINE
  mov ecx, ap_trampoline_end - ap_trampoline
  rep movsb
  mov byte ptr [AP_FLAG], 0
  /* INIT, then SIPI twice, to APIC id 1 through the local APIC's ICR. */
  mov rdi, 0xfee00000
  mov dword ptr [rdi + 0x310], 1 << 24
  mov dword ptr [rdi + 0x300], 0x00004500
  PIT_DELAY PIT_HZ/100                /* 10 ms after INIT, as the MP specification asks */
  mov dword ptr [rdi + 0x310], 1 << 24
  mov dword ptr [rdi + 0x300], 0x00004600 | (TRAMPOLINE >> 12)
  PIT_DELAY PIT_HZ/1000               /* 1 ms (at least 200 us) between the SIPIs */
  mov dword ptr [rdi + 0x310], 1 << 24
  mov dword ptr [rdi + 0x300], 0x00004600 | (TRAMPOLINE >> 12)
  call pit_now
  lea r8, [rax + 3 * PIT_HZ]          /* the deadline */
.Lwait:
  cmp byte ptr [AP_FLAG], 1
  je .Lup
  call pit_now
  cmp rax, r8
  jb .Lwait
  PUTS "moss-test-guest: the second vCPU did not start\n"
  mov eax, 22
  ret
.Lup:
  PUTS "moss-test-guest: second vCPU started\n"
  xor eax, eax
  ret

/* Real mode, CS:IP = 0x0800:0000. Position independent; DS = 0 for the flag. */
ap_trampoline:
  .code16
  cli
  xor ax, ax
  mov ds, ax
  mov byte ptr [AP_FLAG], 1
2: hlt
  jmp 2b
  .code64
ap_trampoline_end:
