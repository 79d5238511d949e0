from chutes.chute import Chute, NodeSelector
from chutes.image import Image
from pydantic import BaseModel, Field

# Define custom image
image = (
    Image(username="myuser", name="my-chute", tag="1.0")
    .from_base("parachutes/python:3.12")
    .run_command("pip install transformers torch")
)

# Define input/output schemas
class GenerationInput(BaseModel):
    prompt: str = Field(..., description="Input prompt")
    max_tokens: int = Field(100, ge=1, le=1000)

class GenerationOutput(BaseModel):
    text: str
    tokens_used: int

# Create chute
chute = Chute(
    username="myuser",
    name="text-generator",
    tagline="Generate text with transformers",
    readme="## Text Generator\n\nGenerates text from prompts.",
    image=image,
    node_selector=NodeSelector(
        gpu_count=1,
        min_vram_gb_per_gpu=16
    ),
    concurrency=4,
    max_instances=3,
    shutdown_after_seconds=300,
    allow_external_egress=False
)

@chute.on_startup()
async def load_model(self):
    """Load model during startup."""
    from transformers import pipeline
    self.generator = pipeline("text-generation", model="gpt2", device=0)
    print("Model loaded!")

@chute.cord(
    public_api_path="/generate",
    public_api_method="POST",
    minimal_input_schema=GenerationInput
)
async def generate(self, input_data: GenerationInput) -> GenerationOutput:
    """Generate text from a prompt."""
    result = self.generator(
        input_data.prompt,
        max_length=input_data.max_tokens
    )[0]["generated_text"]
    return GenerationOutput(
        text=result,
        tokens_used=len(result.split())
    )

@chute.cord(public_api_path="/health", public_api_method="GET")
async def health(self) -> dict:
    """Health check endpoint."""
    return {
        "status": "healthy",
        "model_loaded": hasattr(self, "generator")
    }
