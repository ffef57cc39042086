"""WebUI command-line flags (AUTOMATIC1111, Forge and reForge call ``preload(parser)`` before parsing)."""


def preload(parser):
    parser.add_argument("--fiffdepth-checkpoint", type=str, default=None, metavar="PATH",
                        help="FiffDepth checkpoint to use (a diffusers folder, a folder of single files or a "
                             ".safetensors bundle); overrides Settings -> FiffDepth")
