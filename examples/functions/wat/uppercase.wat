;; A map function: every event becomes one output to the topic "uppercased" (an explicit output
;; topic), with the event's key and headers and its value in upper case (ASCII letters).
;; Same memory layout as identity.wat.
(module
  (memory (export "memory") 1)
  (data (i32.const 16) "uppercased")

  (func (export "freshet_alloc") (param $size i32) (result i32)
    (local $need i32) (local $have i32)
    (local.set $need (i32.add (i32.const 1088) (i32.shl (local.get $size) (i32.const 1))))
    (local.set $have (i32.shl (memory.size) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (local.get $have))
      (then
        (if (i32.eq (i32.const -1)
                    (memory.grow (i32.shr_u (i32.add (i32.sub (local.get $need) (local.get $have))
                                                     (i32.const 65535))
                                            (i32.const 16))))
          (then unreachable))))
    (i32.const 1024))

  ;; Skips an optional field (i32 length, -1 = null, then the bytes).
  (func $skip_opt (param $p i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load (local.get $p)))
    (if (result i32) (i32.lt_s (local.get $n) (i32.const 0))
      (then (i32.add (local.get $p) (i32.const 4)))
      (else (i32.add (i32.add (local.get $p) (i32.const 4)) (local.get $n)))))

  ;; Skips the headers (u32 count; each: u32 name length, name, optional value).
  (func $skip_headers (param $p i32) (result i32)
    (local $n i32)
    (local.set $n (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $p (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))
        (local.set $p (call $skip_opt (local.get $p)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (local.get $p))

  (func (export "freshet_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $n i32) (local $reply i32) (local $out i32) (local $start i32) (local $size i32)
    (local $v i32) (local $end i32) (local $c i32)
    (local.set $p (i32.add (i32.add (local.get $ptr) (i32.const 4)) (i32.load (local.get $ptr))))
    (local.set $n (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (local.set $reply (i32.add (local.get $ptr) (local.get $len)))
    (i32.store (local.get $reply) (i32.const 0))
    (i32.store offset=4 (local.get $reply) (local.get $n))
    (local.set $out (i32.add (local.get $reply) (i32.const 8)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $start (i32.add (local.get $p) (i32.const 20)))
        (local.set $p (call $skip_headers (call $skip_opt (call $skip_opt (local.get $start)))))
        (local.set $size (i32.sub (local.get $p) (local.get $start)))
        ;; topic: "uppercased"
        (i32.store (local.get $out) (i32.const 10))
        (memory.copy (i32.add (local.get $out) (i32.const 4)) (i32.const 16) (i32.const 10))
        (local.set $out (i32.add (local.get $out) (i32.const 14)))
        (memory.copy (local.get $out) (local.get $start) (local.get $size))
        ;; The value's bytes in the output: after the key.
        (local.set $v (i32.add (local.get $out) (i32.sub (call $skip_opt (local.get $start)) (local.get $start))))
        (if (i32.gt_s (i32.load (local.get $v)) (i32.const 0))
          (then
            (local.set $end (i32.add (i32.add (local.get $v) (i32.const 4)) (i32.load (local.get $v))))
            (local.set $v (i32.add (local.get $v) (i32.const 4)))
            (loop $byte
              (local.set $c (i32.load8_u (local.get $v)))
              (if (i32.lt_u (i32.sub (local.get $c) (i32.const 97)) (i32.const 26))
                (then (i32.store8 (local.get $v) (i32.sub (local.get $c) (i32.const 32)))))
              (local.set $v (i32.add (local.get $v) (i32.const 1)))
              (br_if $byte (i32.lt_u (local.get $v) (local.get $end))))))
        (local.set $out (i32.add (local.get $out) (local.get $size)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $out) (i32.const 0))
    (local.set $out (i32.add (local.get $out) (i32.const 4)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $reply)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $out) (local.get $reply))))))
