;; The identity function: every event becomes one output to the default output topic, with the
;; event's key, value and headers. See docs/functions-wasm-abi.md.
;;
;; Memory layout: the input batch at 1024 (freshet_alloc), the reply right after it. The reply is
;; never larger than the input plus 12 bytes, so freshet_alloc grows the memory for twice the
;; input.
(module
  (memory (export "memory") 1)

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
    ;; Skip the topic; read the event count.
    (local.set $p (i32.add (i32.add (local.get $ptr) (i32.const 4)) (i32.load (local.get $ptr))))
    (local.set $n (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (local.set $reply (i32.add (local.get $ptr) (local.get $len)))
    (i32.store (local.get $reply) (i32.const 0))               ;; status: ok
    (i32.store offset=4 (local.get $reply) (local.get $n))     ;; output count
    (local.set $out (i32.add (local.get $reply) (i32.const 8)))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $n)))
        ;; An event's key, value and headers are laid out as an output's: copy them after a
        ;; topic of -1 (the default output topic), skipping partition, offset and timestamp.
        (local.set $start (i32.add (local.get $p) (i32.const 20)))
        (local.set $p (call $skip_headers (call $skip_opt (call $skip_opt (local.get $start)))))
        (local.set $size (i32.sub (local.get $p) (local.get $start)))
        (i32.store (local.get $out) (i32.const -1))
        (memory.copy (i32.add (local.get $out) (i32.const 4)) (local.get $start) (local.get $size))
        (local.set $out (i32.add (local.get $out) (i32.add (i32.const 4) (local.get $size))))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $out) (i32.const 0))                 ;; failure count
    (local.set $out (i32.add (local.get $out) (i32.const 4)))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $reply)) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $out) (local.get $reply))))))
