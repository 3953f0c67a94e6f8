/* The workload of the instruction-step benchmark and of the emulated-step differential test:
 * a loop of common instructions (mov, add, sub, cmp, jcc, lea, push, pop, call, ret, loads
 * and stores to the stack and to .data, and flag-setting instructions whose flags the SDM
 * leaves partly undefined: imul, shl, bsf, ror). Static, no libc, so every address is fixed
 * (with ASLR off, two runs have the same registers at every step).
 *
 *   bench_steploop          300 iterations, then the sites below, then exit(0)
 *   bench_steploop ANY      (practically) forever, and without the bsf (which emulation
 *                           leaves to the CPU): the benchmark stops it
 *
 * After the loop come labelled sites that the tests start from directly: a system call, a
 * locked add on .data and on a MAP_SHARED page (r15, mapped first), and a load from an
 * unmapped address. */
    .intel_syntax noprefix
    .data
    .balign 64
    .globl buf
buf:
    .quad 0, 0, 0, 0, 0, 0, 0, 0
    .globl counter
counter:
    .quad 0

    .text
    .globl _start
_start:
    mov eax, 9                  /* mmap(0, 4096, RW, MAP_SHARED|MAP_ANONYMOUS, -1, 0) */
    xor edi, edi
    mov esi, 4096
    mov edx, 3
    mov r10d, 0x21
    mov r8, -1
    xor r9d, r9d
    syscall
    mov r15, rax
    .globl after_setup
after_setup:
    mov r12, 300
    xor r13d, r13d
    cmp qword ptr [rsp], 1      /* argc */
    je 1f
    mov r12, 0x7fffffffffffffff
    mov r13d, 1
1:
    lea rbx, [rip + buf]
    mov rax, 0x0123456789abcdef
    mov ecx, 5
    .globl loop_top
loop_top:
    push rbx
    mov rdx, rax
    imul rdx, rcx
    pushfq
    pop r10
    add rax, rdx
    shl rdx, cl
    mov [rbx], rax
    add [rbx + 8], rdx
    sub rax, [rbx + 8]
    test r13, r13
    jnz 4f
    bsf rsi, rax
4:
    xor edi, edi
    cmp rax, rdx
    jae 2f
    inc rdi
2:
    call leaf
    mov [rsp - 16], rdi
    pop rbx
    lea rcx, [rcx + rax*2 + 7]
    and ecx, 63
    test rax, rax
    cmovs rsi, rdx
    movzx r9d, byte ptr [rbx + 3]
    mov [rbx + 16], r9
    dec r12
    jnz loop_top

    mov eax, 110                /* getppid: the same in two runs started alike */
    .globl syscall_site
syscall_site:
    syscall
    .globl lock_site
lock_site:
    lock add qword ptr [rip + counter], 1
    .globl lock_shared_site
lock_shared_site:
    lock add qword ptr [r15], 1
    jmp 3f
    .globl fault_site
fault_site:                     /* reached only by a test that puts rip here */
    mov rax, qword ptr [8]
3:
    .globl done
done:
    mov eax, 60                 /* exit(0) */
    xor edi, edi
    syscall

leaf:
    push rbp
    mov rbp, rsp
    sub rsp, 16
    mov [rbp - 8], rax
    mov r9, [rbp - 8]
    ror r9, 3
    pushfq
    pop r11
    xor r9, rdx
    leave
    ret
