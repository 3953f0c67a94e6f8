/* Under fire: the traps GDB falls into. Each site has a global label (a probe address).
 *   tf_window(out): sets TF itself, runs a few instructions (probe sites inside), clears TF.
 *   own_int3(): runs its own int3.
 *   pushf_site(): pushf; pop rax: returns the flags as pushed (TF must be clear).
 *   redzone(): fills the 128-byte red zone, runs probe sites (one goes out of line, which
 *   maps the XOL area on its first hit), returns how many red-zone bytes changed.
 * The registers each leaves are stored to `regs_out` (10 quads) for the C side to print. */
    .intel_syntax noprefix
    .data
    .balign 16
    .globl regs_out, rz_var
regs_out: .skip 80
rz_var: .quad 0x1122334455667788

    .text
    .macro SAVE
    mov [rip + regs_out], rax
    mov [rip + regs_out + 8], rbx
    mov [rip + regs_out + 16], rcx
    mov [rip + regs_out + 24], rdx
    mov [rip + regs_out + 32], rsi
    mov [rip + regs_out + 40], r8
    mov [rip + regs_out + 48], r9
    mov [rip + regs_out + 56], r10
    mov [rip + regs_out + 64], r11
    pushf
    pop qword ptr [rip + regs_out + 72]
    .endm

    .globl tf_window, tf_site_add, tf_site_lea, tf_site_pushf, tf_site_load, tf_site_popf
tf_window:
    push rbx
    xor r9d, r9d
    xor r10d, r10d
    xor r11d, r11d
    mov rax, 5
    mov rbx, 7
    pushf
    or qword ptr [rsp], 0x100
    popf                         /* TF on: a SIGTRAP after every instruction from here */
tf_site_add:
    add rax, rbx
tf_site_lea:
    lea rcx, [rip + rz_var]
tf_site_load:
    mov rdx, [rip + rz_var]
tf_site_pushf:
    pushf
    pop rsi
    and rsi, 0x100               /* the program's own TF, as it pushed it */
    pushf
    and qword ptr [rsp], ~0x100
tf_site_popf:
    popf                         /* TF off: the trap after this popf is the last one */
    lea rcx, [rip + rz_var]
    sub rcx, rcx
    mov r8, rax
    SAVE
    pop rbx
    ret

    .globl own_int3, own_int3_after
own_int3:
    mov rax, 11
    int3
own_int3_after:
    add rax, 1
    ret

    .globl pushf_site, pushf_site_pop
pushf_site:
    pushf
pushf_site_pop:
    pop rax
    and rax, 0x100               /* TF as the program saw it: must be 0 */
    ret

    .globl redzone, rz_site_xol, rz_site_emu, rz_site_push
redzone:
    lea rdi, [rsp - 128]
    mov rcx, 16
    mov rax, 0x5a5a5a5a5a5a5a5a
1:  mov [rdi + 8 * rcx - 8], rax /* fill [rsp-128, rsp) */
    dec rcx
    jnz 1b
rz_site_xol:
    movq xmm0, [rip + rz_var]    /* SSE: always out of line */
rz_site_emu:
    add qword ptr [rip + rz_var], 1
    movq rdx, xmm0
    xor rax, rax
    mov rcx, 16
    mov r8, 0x5a5a5a5a5a5a5a5a
2:  cmp [rdi + 8 * rcx - 8], r8
    setne r9b
    movzx r9, r9b
    add rax, r9
    dec rcx
    jnz 2b
    ret

    .section .note.GNU-stack,"",@progbits
