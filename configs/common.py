"""Shared defaults for every experiment family; presets override fields, never copy them."""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # The model family: vidgen's own (trained in a workdir) or public weights (configs/wan.py: 'wan2.1', read from
  # the checkpoint folder `weights`).
  c.model = "vidgen"
  c.weights = ""

  c.data = ml_collections.ConfigDict()
  c.data.name = "shapes"
  c.data.data_dir = ""  # '' -> WORKDIR/data
  c.data.height = 32
  c.data.width = 32
  c.data.num_frames = 9
  c.data.fps = 8
  c.data.speed = 2.0
  c.data.min_size = 10.0
  c.data.max_size = 13.0
  c.data.two_object_prob = 0.25
  c.data.noise_std = 2.0
  c.data.num_train = 4096
  c.data.num_heldout = 256
  c.data.num_val = 256
  # name='folder': videos (mp4, webm, mov, gif, mkv, avi) and images under `path`, captions from `manifest`
  # (JSONL or CSV with path and caption columns) or sidecar .txt files. name='tfds': a prepared TFDS video
  # dataset under data_dir. Both resample to data.fps (0: keep the source frames) and train in buckets.
  c.data.path = ""
  c.data.manifest = ""
  c.data.tfds_name = ""  # e.g. 'ucf101/ucf101_1', 'moving_mnist'
  c.data.tfds_split = "train"
  c.data.video_key = ""  # '' -> the first video feature
  c.data.caption_key = ""  # '' -> the first Text feature, else a ClassLabel's names
  c.data.source_fps = 0.0  # tfds: the videos' frame rate (TFDS does not record it); 0 keeps the frames
  # "HxWxT[:weight]" each (vidgen/data/buckets.py); () -> one bucket data.height x data.width x data.num_frames.
  c.data.buckets = ()

  # Video VAE (Wan 2.1 layout; patch_size 2 is the Wan 2.2-style pixel patchify).
  c.vae = ml_collections.ConfigDict()
  c.vae.dim = 96
  c.vae.z_dim = 16
  c.vae.dim_mult = (1, 2, 4, 4)
  c.vae.num_res_blocks = 2
  c.vae.attn_scales = ()
  c.vae.temporal_downsample = (False, True, True)
  c.vae.spatial_downsample = (True, True, True)  # False keeps H, W at a level (for patch_size > 1)
  c.vae.patch_size = 1
  c.vae.temporal_patch_size = 1  # > 1 folds frames into channels at the input (after frame 0)
  c.vae.temporal_kernel = 3  # of the 3x3 convs; 1 = per-frame 2D convs (cheap with temporal_patch_size > 1)
  c.vae.level_shortcuts = False  # parameter-free space-to-channel shortcuts around each level (DC-AE, Wan 2.2)
  c.vae.dropout = 0.0
  c.vae.decoder_level_attention = True  # False: no attention inside decoder levels, as diffusers' AutoencoderKLWan
  c.vae.dtype = "float32"  # compute dtype (bfloat16 on accelerators); parameters stay float32

  # Jointly trained text encoder over a hashed word tokenizer.
  c.text = ml_collections.ConfigDict()
  c.text.encoder = "embedded"  # embedded: trained jointly with the DiT (models/text.py); umt5: Wan's, frozen
  c.text.vocab_size = 4096
  c.text.max_length = 32
  c.text.width = 128
  c.text.depth = 2
  c.text.num_heads = 4
  c.text.token_init_std = 0.02  # init scale of the word embeddings
  c.text.position_init_std = 0.02
  c.text.position = "learned"  # learned (absolute embedding) | rope (relative, in self-attention)
  c.text.rope_theta = 10000.0

  # Latent DiT (Wan 2.1 layout).
  c.dit = ml_collections.ConfigDict()
  c.dit.patch_size = (1, 2, 2)
  c.dit.dim = 256
  c.dit.ffn_dim = 1024
  c.dit.freq_dim = 256
  c.dit.num_heads = 4
  c.dit.depth = 4
  c.dit.qk_norm = True
  c.dit.cross_attn_norm = True
  c.dit.text_pool = True
  c.dit.rope_theta = 10000.0  # RoPE's base: its lowest frequencies hardly turn over a small token grid
  c.dit.pos_embed = "none"  # none | sincos: an absolute (frame, row, column) embedding on top of RoPE
  c.dit.remat = "none"  # none | full | dots (keep matmul outputs) | dots_no_batch: trade compute for memory
  # One block traced and looped over stacked parameters (MaxText's scan_layers): compile time stays flat in
  # depth, FSDP gathers and reduces one block at a time, and the tiny DiT step is 21% faster on CPU
  # (measured). False gives Wan's blocks_i layout; dit.stack_blocks/unstack_blocks convert.
  c.dit.scan_blocks = True
  c.dit.dtype = "float32"  # compute dtype of the text encoder and DiT; parameters and optimizer stay float32
  c.dit.attention = "xla"  # xla | cudnn | splash (TPU) | context (ring over mesh.context)
  # One model for every task: the DiT also reads known frames (anywhere in the clip) and their mask
  # (vidgen/diffusion/conditioning.py); training draws a known-frame mask per example with train_dit.frame_masks.
  c.dit.frame_conditioning = True

  c.train_vae = ml_collections.ConfigDict()
  c.train_vae.steps = 2000
  c.train_vae.batch_size = 16
  c.train_vae.lr = 1e-3
  c.train_vae.warmup_steps = 100
  c.train_vae.weight_decay = 0.0
  c.train_vae.grad_clip = 1.0
  c.train_vae.grad_accum_steps = 1  # micro-batches per optimizer step (batch_size is the whole step's batch)
  c.train_vae.kl_weight = 1e-6
  c.train_vae.l1_weight = 1.0
  c.train_vae.mse_weight = 1.0
  c.train_vae.log_every = 50
  c.train_vae.ckpt_every = 500

  c.train_dit = ml_collections.ConfigDict()
  c.train_dit.steps = 4000
  c.train_dit.batch_size = 32
  c.train_dit.lr = 5e-4
  c.train_dit.warmup_steps = 200
  c.train_dit.weight_decay = 0.0
  c.train_dit.optimizer = "adamw"  # adamw | muon (dense kernels orthogonalised; the rest AdamW at lr)
  c.train_dit.muon_lr = 0.02
  c.train_dit.muon_modules = ()  # () all; ("text",): Muon for the text encoder only, AdamW for the DiT
  c.train_dit.grad_clip = 1.0
  c.train_dit.grad_accum_steps = 1  # micro-batches per optimizer step (batch_size is the whole step's batch)
  c.train_dit.ema_decay = 0.999
  c.train_dit.text_dropout = 0.1
  c.train_dit.word_dropout = 0.0  # each caption word removed with this probability (the rest close up)
  c.train_dit.t_mean = 0.0
  c.train_dit.t_std = 1.0
  c.train_dit.shift = 1.0
  # MASK:WEIGHT for each kind of known frames (conditioning.MASKS).
  c.train_dit.frame_masks = "none:0.4,first:0.15,prefix:0.15,suffix:0.1,ends:0.1,keyframes:0.1"
  c.train_dit.log_every = 50
  c.train_dit.ckpt_every = 1000

  c.sample = ml_collections.ConfigDict()
  c.sample.steps = 30
  c.sample.solver = "heun"
  c.sample.cfg_scale = 4.0
  c.sample.shift = 1.0
  c.sample.seed = 0
  c.sample.batch_size = 32
  c.sample.use_ema = True
  c.sample.negative_prompt = ""  # what classifier-free guidance steers away from ('' = unconditional)

  c.eval = ml_collections.ConfigDict()
  c.eval.num_prompts = 64  # judged single-object prompts per set (held-out and training compositions)
  c.eval.num_recon = 64  # held-out clips the VAE reconstructs (PSNR, and judged)
  c.eval.num_two_object = 32  # judged prompts naming two held-out compositions (0 skips the set)
  c.eval.num_paraphrase = 64  # judged held-out prompts in word orders training never uses (0 skips the set)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1: all devices left over
  c.mesh.fsdp = 1
  c.mesh.context = 1  # splits the DiT token sequence (dit.attention='context')
  c.mesh.tensor = 1
  c.checkpoint_keep = 2
  return c
