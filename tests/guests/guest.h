/* Shared pieces of the freestanding test guests (GNU as, Intel syntax, via the C preprocessor).
 *
 * They run on any KVM, including PVM where guest kernel code is emulated, so they use only
 * simple instructions: no int3, xrstor, popcnt or cmpxchg16b.
 *
 * Contract with the VMM: entered per the 64-bit Linux boot protocol (long mode, flat
 * segments 0x10/0x18, identity paging, RSI = boot_params); results go to the serial port
 * 0x3f8, and the final status to the moss exit port 0x5f0 (32-bit out). */
.intel_syntax noprefix

#define EXIT_PORT 0x5f0
#define COM1 0x3f8
#define STACK_TOP 0x1f0000

/* The setup block. Its real-mode code runs only under firmware loaders (QEMU's -kernel): it
   receives control in real mode at the jump at 0x200. By default it reports "first
   instruction" and stops; a guest that defines GUEST_FIRMWARE_ENTRY before including this
   file instead enters long mode itself (see KERNEL_START) and runs as it would under moss. */
.macro BZIMAGE_HEADER
  .section .setup, "ax"
  .code16
setup_start:
  .org 0x1f1
  .byte 1              /* setup_sects: one 512-byte sector after the boot sector. */
  .word 0              /* root_flags */
  .long 0              /* syssize */
  .word 0, 0, 0        /* ram_size, vid_mode, root_dev */
  .word 0xaa55         /* boot_flag */
  .byte 0xeb, realmode_entry - setup_start - 0x202  /* jump over the header */
  .ascii "HdrS"
  .word 0x020f         /* boot protocol 2.15 */
  .long 0              /* realmode_swtch */
  .word 0              /* start_sys_seg */
  .word 0              /* kernel_version: none, this is not Linux */
  .byte 0              /* type_of_loader */
  .byte 1              /* loadflags: LOADED_HIGH */
  .word 0              /* setup_move_size */
  .long 0x100000       /* code32_start */
  .long 0, 0           /* ramdisk_image, ramdisk_size */
  .long 0              /* bootsect_kludge */
  .word 0              /* heap_end_ptr */
  .byte 0, 0           /* ext_loader_ver, ext_loader_type */
  .long 0              /* cmd_line_ptr */
  .long 0x7fffffff     /* initrd_addr_max */
  .long 0x200000       /* kernel_alignment */
  .byte 0, 0           /* relocatable_kernel, min_alignment */
  .word 1              /* xloadflags: XLF_KERNEL_64 */
  .long 255            /* cmdline_size */
  .long 0              /* hardware_subarch */
  .quad 0              /* hardware_subarch_data */
  .long 0, 0           /* payload_offset, payload_length */
  .quad 0              /* setup_data */
  .quad 0x100000       /* pref_address */
  .long 0x100000       /* init_size */
  .long 0              /* handover_offset */
  .long 0              /* kernel_info_offset */
realmode_entry:
#ifdef GUEST_FIRMWARE_ENTRY
  /* Entered at setup_seg+0x20:0 (the jump at offset 0x200) with interrupts possibly on. Go
     to 32-bit protected mode and on to entry32, which enters long mode like moss would have;
     ESI = the setup block's linear address (boot_params, per the 32-bit boot protocol). */
  cli
  cld
  mov ax, cs
  sub ax, 0x20
  mov ds, ax                /* DS:label = the label's place in the setup block */
  movzx esi, ax
  shl esi, 4
  in al, 0x92               /* A20 on (fast gate); bit 0 would reset the machine */
  or al, 2
  and al, 0xfe
  out 0x92, al
  .byte 0x66                /* lgdt with a 32-bit base: the GDT lives in the kernel at 1 MiB */
  lgdt [boot_gdt_ptr]
  mov eax, cr0
  or al, 1                  /* PE */
  mov cr0, eax
  mov ax, 0x18              /* flat data segments, as the 32-bit boot protocol has them */
  mov ds, ax
  mov es, ax
  mov ss, ax
  .byte 0x66, 0xea          /* jmp far 0x08:entry32, 32-bit offset */
  .long entry32
  .word 0x08
boot_gdt_ptr:
  .word boot_gdt_end - boot_gdt - 1
  .long boot_gdt
#else
  /* Under a firmware loader: report "first instruction" to QEMU's isa-debug-exit and stop. */
  mov al, 0
  out 0xf4, al
1: hlt
  jmp 1b
#endif
  .org 0x400
.endm

/* The kernel section up to the 64-bit entry at +0x200: code32_start (unused by moss) halts,
   or with GUEST_FIRMWARE_ENTRY enters long mode the way moss would have set it up: flat
   segments 0x10 (64-bit code) and 0x18 (data), identity paging of the first 4 GiB with
   2 MiB pages (tables at 0x1000-0x6fff), then entry64 with RSI = boot_params. */
.macro KERNEL_START
  .section .kernel, "ax"
  .code32
entry32:
#ifdef GUEST_FIRMWARE_ENTRY
  lgdt [boot_gdt_ptr32]
  .byte 0xea                /* jmp far 0x08:1f: our own 32-bit code segment */
  .long 1f
  .word 0x08
1: mov eax, 0x18
  mov ds, eax
  mov es, eax
  mov ss, eax
  mov edi, 0x1000           /* clear the PML4 and the PDPT */
  xor eax, eax
  mov ecx, 0x2000 / 4
  rep stosd
  mov dword ptr [0x1000], 0x2003            /* PML4[0] -> PDPT; present, writable */
  mov dword ptr [0x2000], 0x3003            /* PDPT[0..3] -> four page directories */
  mov dword ptr [0x2008], 0x4003
  mov dword ptr [0x2010], 0x5003
  mov dword ptr [0x2018], 0x6003
  mov edi, 0x3000
  mov eax, 0x83             /* present, writable, 2 MiB page */
  mov ecx, 2048
2: mov [edi], eax
  mov dword ptr [edi + 4], 0
  add eax, 0x200000
  add edi, 8
  dec ecx
  jnz 2b
  mov eax, cr4
  or eax, 0x20              /* PAE */
  mov cr4, eax
  mov eax, 0x1000
  mov cr3, eax
  mov ecx, 0xc0000080       /* EFER.LME */
  rdmsr
  or eax, 0x100
  wrmsr
  mov eax, cr0
  or eax, 0x80000001        /* PG | PE */
  mov cr0, eax
  .byte 0xea                /* jmp far 0x10:3f: long mode */
  .long 3f
  .word 0x10
  .code64
3: mov eax, 0x18
  mov ds, eax
  mov es, eax
  mov ss, eax
  mov esi, esi              /* boot_params, zero-extended */
  jmp entry64
  .balign 8
boot_gdt:
  .quad 0
  .quad 0x00cf9a000000ffff  /* 0x08: 32-bit code */
  .quad 0x00af9a000000ffff  /* 0x10: 64-bit code */
  .quad 0x00cf92000000ffff  /* 0x18: data */
boot_gdt_end:
boot_gdt_ptr32:
  .word boot_gdt_end - boot_gdt - 1
  .long boot_gdt
#else
  hlt
  jmp entry32
#endif
  .org 0x200
  .code64
  .globl entry64
entry64:
.endm

/* KERNEL_START plus the usual 64-bit entry: set a stack, keep boot_params in r15, start the
   PIT clock, call guest_main and write its status (eax) to the exit port; and the serial and
   timing helpers. */
.macro KERNEL_ENTRY
  KERNEL_START
  mov r15, rsi
  mov rsp, STACK_TOP
  call pit_start
  call guest_main
  /* guest_main returns its status in eax. */
  mov dx, EXIT_PORT
  out dx, eax
hang:
  cli
  hlt
  jmp hang

/* putc: al = byte. Polls LSR.THRE like a firmware console. Preserves registers. */
putc:
  push rdx
  push rax
  mov dx, COM1 + 5
2: in al, dx
  test al, 0x20
  jz 2b
  pop rax
  mov dx, COM1
  out dx, al
  pop rdx
  ret

/* puts: rdi = NUL-terminated string. */
puts:
  push rax
  push rdi
3: mov al, [rdi]
  test al, al
  jz 4f
  call putc
  inc rdi
  jmp 3b
4: pop rdi
  pop rax
  ret

/* puthex: rax = value, printed as 16 hex digits. */
puthex:
  push rax
  push rbx
  push rcx
  mov rbx, rax
  mov ecx, 16
5: rol rbx, 4
  mov al, bl
  and al, 0xf
  add al, '0'
  cmp al, '9'
  jbe 6f
  add al, 'a' - '0' - 10
6: call putc
  dec ecx
  jnz 5b
  pop rcx
  pop rbx
  pop rax
  ret

/* Time. A guest's waits are measured in time, never in loop iterations: guest kernel code
   runs about a thousand times slower under PVM's emulation or TCG than on hardware, but the
   PIT counts real time everywhere (KVM's in-kernel PIT, QEMU's). Channel 1 is used because it
   raises no interrupt and its gate is always high: in mode 0 with a count of 65536 it counts
   down at PIT_HZ and wraps. pit_now adds the ticks since its last call to a 64-bit total, so
   calls must come less than 54.9 ms apart to see all of the time; a longer gap loses whole
   wraps, which makes a wait longer, never shorter. */
pit_start:
  push rax
  mov al, 0x70              /* channel 1, low byte then high byte, mode 0, binary */
  out 0x43, al
  xor eax, eax
  out 0x41, al
  out 0x41, al              /* count 0: 65536; the counter reads 0 right after the load */
  mov qword ptr [rip + pit_total], rax
  mov word ptr [rip + pit_last], ax
  pop rax
  ret

/* pit_now: rax = PIT ticks since pit_start. Preserves every other register (C may call it). */
  .globl pit_now
pit_now:
  push rcx
  push rdx
  mov al, 0x40              /* latch channel 1's count */
  out 0x43, al
  in al, 0x41
  mov cl, al
  in al, 0x41
  mov ch, al
  movzx ecx, cx
  movzx edx, word ptr [rip + pit_last]
  mov [rip + pit_last], cx
  sub edx, ecx
  and edx, 0xffff           /* ticks since the last call, mod 65536 */
  mov rax, [rip + pit_total]
  add rax, rdx
  mov [rip + pit_total], rax
  pop rdx
  pop rcx
  ret

/* pit_delay: waits rdi PIT ticks. Preserves registers. */
pit_delay:
  push rax
  push rdi
  call pit_now
  add rdi, rax              /* the deadline */
7: call pit_now
  cmp rax, rdi
  jb 7b
  pop rdi
  pop rax
  ret

  .balign 8
pit_total: .quad 0
pit_last: .word 0
  .balign 8
.endm

#define PIT_HZ 1193182

/* PIT_DELAY ticks: waits that long (a constant expression without spaces, e.g. 2*PIT_HZ;
   PIT_HZ ticks are one second).
   Preserves registers. */
.macro PIT_DELAY ticks
  push rdi
  mov edi, \ticks
  call pit_delay
  pop rdi
.endm

/* PUTS "text": prints a literal string (escapes such as \n allowed). Preserves registers. */
.macro PUTS text
  push rdi
  lea rdi, [rip + .Lstr\@]
  call puts
  pop rdi
  jmp .Lend\@
.Lstr\@: .asciz "\text"
.Lend\@:
.endm

/* FAIL_IF cond, status: returns `status` from guest_main when the flags say `cond`. */
.macro FAIL_IF cond, status
  j\cond .Lfail\@
  jmp .Lok\@
.Lfail\@:
  mov eax, \status
  ret
.Lok\@:
.endm
